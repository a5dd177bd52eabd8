// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"strconv"

	"golang.org/x/sys/unix"
)

func itoa(fd int) string { return strconv.Itoa(fd) }

// openFlags keeps the open(2) flags a guest may pass to the host: the
// access mode, append, truncate and synchronous I/O. O_CREAT/O_EXCL are
// added by CREATE only; O_DIRECT, O_NOATIME, O_PATH, O_TMPFILE and the
// rest are dropped.
func openFlags(guest uint32) int {
	const keep = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_SYNC | unix.O_DSYNC
	f := int(guest) & keep
	if f&unix.O_ACCMODE == unix.O_ACCMODE {
		f &^= unix.O_ACCMODE // 3 is not an access mode; treat as read-only
	}
	return f
}

// writes reports whether flags ask to change the file.
func writes(flags int) bool {
	return flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
}

// putOpenOut writes struct fuse_open_out with no FOPEN_* flags: the guest
// page cache is used and dropped on open, as without FOPEN_KEEP_CACHE.
func putOpenOut(b []byte, fh uint64) {
	le.PutUint64(b[0:], fh)
	le.PutUint32(b[8:], 0)
	le.PutUint32(b[12:], 0)
}

// open opens a regular file. Nothing else is opened on the host: FIFOs,
// sockets and device nodes are opened by the guest kernel itself and never
// reach OPEN from a well-behaved guest.
func (s *Server) open(r *request) (int, unix.Errno) {
	flags := openFlags(le.Uint32(r.in.fixed(openInSize)))
	n := r.node
	if n.isDir() {
		return 0, unix.EISDIR
	}
	if !n.isReg() {
		return 0, unix.ENXIO
	}
	if writes(flags) && s.cfg.ReadOnly {
		s.m.ReadOnlyRejects.Add(1)
		return 0, unix.EROFS
	}
	var size int64 = -1
	if flags&unix.O_TRUNC != 0 && s.cfg.QuotaBytes > 0 {
		var st unix.Stat_t
		if err := fstat(n.fd, &st); err == nil {
			size = st.Size
		}
	}
	fd, err := s.reopen(n, flags)
	if err != nil {
		return 0, errno(err)
	}
	if size > 0 {
		s.uncharge(0, uint64(size))
	}
	fh, e := s.handles.add(&handle{fd: fd, key: n.key, appends: flags&unix.O_APPEND != 0})
	if e != 0 {
		return 0, e
	}
	putOpenOut(r.out, fh)
	return openOutSize, 0
}

// create creates and opens a regular file in one step. The file is opened
// with openat2 beneath the directory, O_NOFOLLOW and RESOLVE_NO_SYMLINKS,
// so a symlink planted at name is never followed to create a file
// elsewhere.
func (s *Server) create(r *request) (int, unix.Errno) {
	in := r.in.fixed(createInSize)
	flags := openFlags(le.Uint32(in[0:])) | int(le.Uint32(in[0:]))&unix.O_EXCL
	mode := le.Uint32(in[4:])
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	name, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	// Create exclusively first, so ownership is given only to a file this
	// request made; an existing file is opened as OPEN would unless the
	// guest asked for O_EXCL.
	made := true
	perm := s.permBits(mode, false)
	fd, err := openBeneath(dir.fd, name, flags|unix.O_CREAT|unix.O_EXCL, perm)
	if err == unix.EEXIST && flags&unix.O_EXCL == 0 {
		made = false
		fd, err = openBeneath(dir.fd, name, flags, 0)
	}
	if err != nil {
		return 0, errno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return 0, unix.EIO
	}
	if made && s.cfg.GuestOwnership && s.asRoot {
		// Chown what we opened, not whatever name points to now.
		if err := unix.Fchown(fd, int(r.hdr.uid), int(r.hdr.gid)); err != nil {
			unix.Close(fd)
			unix.Unlinkat(dir.fd, name, 0)
			return 0, errno(err)
		}
		st.Uid, st.Gid = r.hdr.uid, r.hdr.gid
	}
	if made && st.Mode&0o7777 != perm && unix.Fchmod(fd, perm) == nil {
		// The host process's umask narrowed the mode; the guest applied
		// its own already.
		st.Mode = st.Mode&unix.S_IFMT | perm
	}
	nodeFD, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return 0, errno(err)
	}
	n, e := s.nodes.add(nodeFD, &st)
	if e != 0 {
		unix.Close(fd)
		if made {
			unix.Unlinkat(dir.fd, name, 0)
		}
		return 0, e
	}
	fh, e := s.handles.add(&handle{fd: fd, key: n.key, appends: flags&unix.O_APPEND != 0})
	if e != 0 {
		s.nodes.forget(n.id, 1)
		if made {
			unix.Unlinkat(dir.fd, name, 0)
		}
		return 0, e
	}
	a := toAttr(&st)
	putEntryOut(r.out, n.id, s.valid, &a)
	putOpenOut(r.out[entryOutSize:], fh)
	return entryOutSize + openOutSize, 0
}

// read answers READ with up to size bytes at offset, capped to MaxRead and
// to the reply space.
func (s *Server) read(r *request) (int, unix.Errno) {
	in := r.in.fixed(readInSize)
	fh, off, size := le.Uint64(in[0:]), le.Uint64(in[8:]), le.Uint32(in[16:])
	h, e := s.handles.file(fh)
	if e != 0 {
		return 0, e
	}
	if off > 1<<62 {
		return 0, unix.EINVAL
	}
	if r.vec != nil {
		n := min(int(size), MaxRead, r.vecLen)
		got, err := preadFull(h.fd, limit(r.vec, n), int64(off))
		return got, errno(err)
	}
	n := min(int(size), MaxRead, len(r.out))
	got, err := preadFull(h.fd, [][]byte{r.out[:n]}, int64(off))
	return got, errno(err)
}

// write answers WRITE. The payload must follow the fixed header in the
// request: a size past the request's end is refused, not read beyond.
func (s *Server) write(r *request) (int, unix.Errno) {
	in := r.in.fixed(writeInSize)
	fh, off, size := le.Uint64(in[0:]), le.Uint64(in[8:]), le.Uint32(in[16:])
	if size > MaxWrite || int(size) > len(r.in.b)+totalLen(r.tail) {
		s.m.BadRequests.Add(1)
		return 0, unix.EINVAL
	}
	if off > 1<<62 {
		return 0, unix.EFBIG
	}
	h, e := s.handles.file(fh)
	if e != 0 {
		return 0, e
	}
	data := limit(append([][]byte{r.in.b}, r.tail...), int(size))
	end := off + uint64(size)
	var cur int64 = -1
	if s.cfg.QuotaBytes > 0 {
		var st unix.Stat_t
		if err := unix.Fstat(h.fd, &st); err != nil {
			return 0, errno(err)
		}
		cur = st.Size
		if h.appends {
			// pwrite on an O_APPEND fd writes at the end whatever the
			// offset says.
			end = uint64(cur) + uint64(size)
		}
		if e := s.charge(uint64(cur), max(uint64(cur), end)); e != 0 {
			return 0, e
		}
	}
	done, err := pwriteFull(h.fd, data, int64(off))
	if err != nil || done < int(size) {
		if cur >= 0 {
			// Recount from what the file became.
			s.uncharge(uint64(cur), max(uint64(cur), end))
			var st unix.Stat_t
			if unix.Fstat(h.fd, &st) == nil {
				s.charge(uint64(cur), max(uint64(cur), uint64(st.Size)))
			}
		}
		if err != nil {
			return 0, errno(err)
		}
	}
	le.PutUint32(r.out[0:], uint32(done))
	le.PutUint32(r.out[4:], 0)
	return writeOutSize, 0
}

// release serves RELEASE and RELEASEDIR.
func (s *Server) release(r *request) (int, unix.Errno) {
	fh := le.Uint64(r.in.fixed(releaseInSize))
	h := s.handles.byID[fh]
	if h == nil || h.dir != (r.hdr.opcode == opReleasedir) {
		return 0, unix.EBADF
	}
	return 0, s.handles.release(fh)
}

// fsync serves FSYNC and FSYNCDIR.
func (s *Server) fsync(r *request) (int, unix.Errno) {
	in := r.in.fixed(fsyncInSize)
	fh, flags := le.Uint64(in[0:]), le.Uint32(in[8:])
	h := s.handles.byID[fh]
	if h == nil || h.dir != (r.hdr.opcode == opFsyncdir) {
		return 0, unix.EBADF
	}
	var err error
	if flags&fsyncDataSync != 0 {
		err = unix.Fdatasync(h.fd)
	} else {
		err = unix.Fsync(h.fd)
	}
	return 0, errno(err)
}

// fallocate serves FALLOCATE with the modes that keep data in the file:
// plain allocation, KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE.
func (s *Server) fallocate(r *request) (int, unix.Errno) {
	in := r.in.fixed(fallocateInSize)
	fh, off, length, mode := le.Uint64(in[0:]), le.Uint64(in[8:]), le.Uint64(in[16:]), le.Uint32(in[24:])
	const allowed = unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_ZERO_RANGE
	if mode&^allowed != 0 {
		return 0, unix.EOPNOTSUPP
	}
	if length == 0 || off > 1<<62 || length > 1<<62 {
		return 0, unix.EINVAL
	}
	if s.cfg.QuotaBytes > 0 && mode&unix.FALLOC_FL_KEEP_SIZE != 0 && mode&unix.FALLOC_FL_PUNCH_HOLE == 0 {
		// Blocks allocated past the size would escape the quota, which
		// counts file sizes.
		return 0, unix.EOPNOTSUPP
	}
	h, e := s.handles.file(fh)
	if e != 0 {
		return 0, e
	}
	var cur int64 = -1
	end := off + length
	if s.cfg.QuotaBytes > 0 && mode&unix.FALLOC_FL_KEEP_SIZE == 0 {
		var st unix.Stat_t
		if err := unix.Fstat(h.fd, &st); err != nil {
			return 0, errno(err)
		}
		cur = st.Size
		if e := s.charge(uint64(cur), max(uint64(cur), end)); e != 0 {
			return 0, e
		}
	}
	if err := unix.Fallocate(h.fd, mode, int64(off), int64(length)); err != nil {
		if cur >= 0 {
			s.uncharge(uint64(cur), max(uint64(cur), end))
		}
		return 0, errno(err)
	}
	return 0, 0
}

func (s *Server) lseek(r *request) (int, unix.Errno) {
	in := r.in.fixed(lseekInSize)
	fh, off, whence := le.Uint64(in[0:]), le.Uint64(in[8:]), le.Uint32(in[16:])
	if whence != unix.SEEK_SET && whence != unix.SEEK_CUR && whence != unix.SEEK_END &&
		whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE {
		return 0, unix.EINVAL
	}
	h, e := s.handles.file(fh)
	if e != 0 {
		return 0, e
	}
	// The fd's own offset is otherwise unused (reads and writes are
	// positioned), so moving it here is harmless.
	pos, err := unix.Seek(h.fd, int64(off), int(whence))
	if err != nil {
		return 0, errno(err)
	}
	le.PutUint64(r.out[0:], uint64(pos))
	return lseekOutSize, 0
}

// charge moves the quota's count from a file size of from bytes to to
// bytes, refusing growth past Config.QuotaBytes with ENOSPC.
func (s *Server) charge(from, to uint64) unix.Errno {
	q := s.cfg.QuotaBytes
	if q == 0 {
		return 0
	}
	if to <= from {
		s.quotaUsed -= min(s.quotaUsed, from-to)
		return 0
	}
	grow := to - from
	if s.quotaUsed > q || grow > q-s.quotaUsed {
		return unix.ENOSPC
	}
	s.quotaUsed += grow
	return 0
}

// uncharge undoes charge(from, to).
func (s *Server) uncharge(from, to uint64) {
	if s.cfg.QuotaBytes == 0 {
		return
	}
	if to > from {
		s.quotaUsed -= min(s.quotaUsed, to-from)
	} else {
		s.quotaUsed += from - to
	}
}
