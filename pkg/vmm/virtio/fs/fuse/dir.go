// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"golang.org/x/sys/unix"
)

// dirBufSize is the getdents buffer: enough for a READDIR reply of a page
// or more, bounded so a large request does not mean a large allocation.
const dirBufSize = 64 << 10

// dirent64 is one decoded struct linux_dirent64.
type dirent64 struct {
	ino  uint64
	off  uint64
	typ  uint8
	name []byte
}

// nextDirent64 decodes the first linux_dirent64 in b (d_ino u64, d_off
// s64, d_reclen u16, d_type u8, NUL-terminated name) and returns the rest.
// The kernel wrote b, but its lengths are still checked.
func nextDirent64(b []byte) (dirent64, []byte, bool) {
	const fixed = 19
	if len(b) < fixed {
		return dirent64{}, nil, false
	}
	reclen := int(le.Uint16(b[16:]))
	if reclen < fixed || reclen > len(b) {
		return dirent64{}, nil, false
	}
	name := b[fixed:reclen]
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	return dirent64{ino: le.Uint64(b[0:]), off: le.Uint64(b[8:]), typ: b[18], name: name}, b[reclen:], true
}

func isDotOrDotDot(n []byte) bool {
	return len(n) > 0 && n[0] == '.' && (len(n) == 1 || (len(n) == 2 && n[1] == '.'))
}

// opendir opens a directory node for reading. "." beneath the node's own
// fd is the directory itself, so no path is followed.
func (s *Server) opendir(r *request) (int, unix.Errno) {
	n, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	fd, err := openBeneath(n.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, errno(err)
	}
	fh, e := s.handles.add(&handle{fd: fd, dir: true, key: n.key})
	if e != 0 {
		return 0, e
	}
	putOpenOut(r.out, fh)
	return openOutSize, 0
}

func (s *Server) readdir(r *request) (int, unix.Errno)     { return s.readdirAny(r, false) }
func (s *Server) readdirplus(r *request) (int, unix.Errno) { return s.readdirAny(r, true) }

// readdirAny answers READDIR and READDIRPLUS: entries after the directory
// offset in.offset (a d_off the server returned earlier, or 0), as many as
// fit in min(size, MaxRead, reply space). READDIRPLUS looks each entry up
// (one node reference each, as the guest expects) except "." and "..",
// which get node id 0 so the guest never learns a node above the root.
//
// Offsets are the host's d_off values. The guest continues from the last
// entry it consumed, which may lie inside the previous reply: the handle
// keeps that reply's entries (handle.ents), so the usual sequential read
// never seeks; other offsets seek.
func (s *Server) readdirAny(r *request, plus bool) (int, unix.Errno) {
	in := r.in.fixed(readInSize)
	fh, off, size := le.Uint64(in[0:]), le.Uint64(in[8:]), le.Uint32(in[16:])
	h, e := s.handles.dir(fh)
	if e != 0 {
		return 0, e
	}
	if off > 1<<63-1 {
		return 0, unix.EINVAL
	}
	limit := min(int(size), MaxRead, len(r.out))

	var pending []dirEnt
	found := false
	if off != 0 {
		for i, d := range h.ents {
			if d.off == off {
				pending, found = h.ents[i+1:], true
				break
			}
		}
	}
	if !found {
		if _, err := unix.Seek(h.fd, int64(off), unix.SEEK_SET); err != nil {
			s.handles.keep(h, nil)
			return 0, errno(err)
		}
	}
	// kept: this reply's entries and those read after them.
	kept := make([]dirEnt, 0, len(pending))
	used, full := 0, false
	emit := func(d dirEnt) {
		need := direntLen(len(d.name))
		if plus {
			need += entryOutSize
		}
		if full || used+need > limit {
			full = true
			return
		}
		out := r.out[used : used+need]
		if plus {
			s.direntPlus(out[:entryOutSize], h.fd, dirent64{ino: d.ino, off: d.off, typ: d.typ, name: []byte(d.name)})
			out = out[entryOutSize:]
		}
		putDirent(out, d.ino, d.off, uint32(d.typ), []byte(d.name))
		used += need
	}
	for _, d := range pending {
		kept = append(kept, d)
		emit(d)
	}
	for !full {
		k, err := unix.Getdents(h.fd, s.dirBuf)
		if err != nil {
			s.handles.keep(h, nil)
			if used > 0 {
				return used, 0
			}
			return 0, errno(err)
		}
		if k <= 0 {
			break
		}
		for p := s.dirBuf[:k]; len(p) > 0; {
			d, rest, ok := nextDirent64(p)
			if !ok {
				break
			}
			p = rest
			de := dirEnt{ino: d.ino, off: d.off, typ: d.typ, name: string(d.name)}
			kept = append(kept, de)
			emit(de)
		}
	}
	// Over the budget nothing is kept, and the next READDIR seeks.
	s.handles.keep(h, kept)
	return used, 0
}

// direntPlus fills the fuse_entry_out of a READDIRPLUS entry. An entry that
// cannot be looked up (gone, or the node table full) gets node id 0: the
// guest then looks it up itself if it needs it.
func (s *Server) direntPlus(out []byte, dirFD int, d dirent64) {
	clear(out)
	if isDotOrDotDot(d.name) || !validName(d.name) {
		return
	}
	var st unix.Stat_t
	n, e := s.lookupChild(dirFD, string(d.name), &st)
	if e != 0 {
		return
	}
	a := toAttr(&st)
	putEntryOut(out, n.id, s.valid, &a)
}
