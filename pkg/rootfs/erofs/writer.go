// SPDX-License-Identifier: Apache-2.0

package erofs

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Inode is one file of the tree to write. The same *Inode may appear under
// several names (hard links), except a directory, which has exactly one.
type Inode struct {
	// Mode is the Linux i_mode: one of the Mode* file-type bits ORed with
	// the permission, setuid, setgid and sticky bits.
	Mode uint32
	// UID and GID are the numeric owner and group.
	UID, GID uint32
	// Mtime and MtimeNsec are the modification time, seconds since the Unix
	// epoch and nanoseconds.
	Mtime     int64
	MtimeNsec uint32
	// Xattrs are the extended attributes, in any order; names must be unique
	// and pass [CheckXattr].
	Xattrs []Xattr
	// Size is the length of a regular file; zero for other types.
	Size int64
	// Data holds a regular file's contents, read at offsets [0, Size). It
	// may be nil when Size is zero.
	Data io.ReaderAt
	// Target is a symbolic link's target, 1 to 4095 bytes; never resolved.
	Target string
	// Major and Minor are a character or block device's numbers
	// (major < 4096, minor < 1<<20, the range of a 32-bit Linux dev_t).
	Major, Minor uint32
	// Entries are a directory's children, without "." and "..", in any
	// order; names must be unique.
	Entries []Entry
}

// Entry is one name in a directory.
type Entry struct {
	Name  string
	Inode *Inode
}

// Options tune [Write]. The zero value is ready to use.
type Options struct {
	// UUID is the volume UUID; zero leaves it zero.
	UUID [16]byte
	// VolumeName is the volume label, at most 16 bytes; longer is cut.
	VolumeName string
}

// Stats describes a written image.
type Stats struct {
	Inodes        int   // distinct inodes
	Compact       int   // inodes written in the 32-byte compact form
	Inline        int   // inodes whose tail sits in the metadata area
	MetaBytes     int64 // superblock and metadata area, padded to a block
	DataBytes     int64 // the data blocks
	Blocks        int64 // image size in blocks
	ImageBytes    int64 // image size in bytes (Blocks * BlockSize)
	BuildTime     int64 // superblock build time (mtime of compact inodes)
	BuildTimeNsec uint32
}

// winode is the writer's view of one inode.
type winode struct {
	in      *Inode
	ino     uint32 // i_ino: 1-based order of placement
	nlink   uint32
	parent  *winode // directories only
	ft      uint8   // EROFS_FT_*
	compact bool
	xattrs  []byte // inline xattr area
	icount  uint16
	size    uint64 // i_size: file length, target length, directory bytes
	inline  bool   // the tail (size % BlockSize bytes) follows the inode
	pos     int64  // byte offset of the inode; nid = pos / SlotSize
	blkaddr uint32 // first data block
	nblocks int64  // data blocks in the data area
	dir     []dirBlock
}

func (w *winode) nid() uint64 { return uint64(w.pos / SlotSize) }

func (w *winode) isize() int64 {
	if w.compact {
		return InodeCompactSize
	}
	return InodeExtendedSize
}

func (w *winode) tail() int64 {
	if !w.inline {
		return 0
	}
	return int64(w.size % BlockSize)
}

// dirBlock is one directory block: entries sorted by name and the bytes
// they use.
type dirBlock struct {
	ents []dirent
	used int
}

type dirent struct {
	name string
	w    *winode
}

// Write writes the EROFS image of the tree under root to out, strictly
// sequentially. It reads regular-file contents from each Inode's Data while
// writing and holds only metadata in memory. ctx is checked between inodes
// and data chunks. On error out holds a partial image that must be discarded.
func Write(ctx context.Context, out io.Writer, root *Inode, opts Options) (Stats, error) {
	var st Stats
	if root == nil || root.Mode&ModeTypeMask != ModeDir {
		return st, fmt.Errorf("%w: root is not a directory", ErrInvalidTree)
	}
	ws, err := collect(root)
	if err != nil {
		return st, err
	}
	st.Inodes = len(ws)

	// Compact inodes carry no mtime: the kernel gives them the superblock
	// build time. Choosing the most common mtime makes most inodes compact.
	type ts struct {
		sec  int64
		nsec uint32
	}
	counts := make(map[ts]int)
	var best ts
	for _, w := range ws {
		if w.in.Mtime < 0 {
			continue
		}
		t := ts{w.in.Mtime, w.in.MtimeNsec}
		counts[t]++
		if c := counts[t]; c > counts[best] || (c == counts[best] && (t.sec < best.sec || t.sec == best.sec && t.nsec < best.nsec)) {
			best = t
		}
	}
	st.BuildTime, st.BuildTimeNsec = best.sec, best.nsec

	for _, w := range ws {
		if err := prepare(w, best.sec, best.nsec); err != nil {
			return st, err
		}
		if w.compact {
			st.Compact++
		}
	}

	// Place the metadata: block 0 holds the superblock, inodes follow it.
	pos := int64(SuperBlockOffset + SuperBlockSize)
	for _, w := range ws {
		pos = place(w, pos)
		if w.inline {
			st.Inline++
		}
	}
	if r := ws[0].nid(); r > math.MaxUint16 {
		panic("erofs: root nid beyond 16 bits") // impossible: the root is placed first, at byte 1152
	}
	metaBlocks := ceilDiv(pos, BlockSize)
	next := metaBlocks
	for _, w := range ws {
		if w.inline {
			w.nblocks = int64(w.size / BlockSize)
		} else {
			w.nblocks = ceilDiv(int64(w.size), BlockSize)
		}
		if w.nblocks > 0 {
			w.blkaddr = uint32(min(next, math.MaxUint32))
		}
		next += w.nblocks
		if next > math.MaxUint32 {
			return st, fmt.Errorf("%w: more than %d blocks", ErrTooLarge, uint64(math.MaxUint32))
		}
	}
	st.Blocks = next
	st.ImageBytes = next * BlockSize
	st.MetaBytes = metaBlocks * BlockSize
	st.DataBytes = st.ImageBytes - st.MetaBytes

	sb := SuperBlock(make([]byte, SuperBlockSize))
	sb.SetMagic(Magic)
	sb.SetBlkSzBits(BlockSizeBits)
	sb.SetRootNid(uint16(ws[0].nid()))
	sb.SetInos(uint64(len(ws)))
	sb.SetBuildTime(uint64(best.sec), best.nsec)
	sb.SetBlocks(uint32(next))
	sb.SetMetaBlkAddr(0)
	sb.SetUUID(opts.UUID)
	sb.SetVolumeName(opts.VolumeName)

	cw := &countWriter{w: bufio.NewWriterSize(out, 1<<20)}
	if err := writeImage(ctx, cw, sb, ws, metaBlocks); err != nil {
		return st, err
	}
	if err := cw.padTo(st.ImageBytes); err != nil {
		return st, err
	}
	if err := cw.w.Flush(); err != nil {
		return st, fmt.Errorf("erofs: write: %w", err)
	}
	return st, nil
}

// collect walks the tree breadth first, so the inodes of one directory's
// children sit together, and returns each distinct inode once, root first.
func collect(root *Inode) ([]*winode, error) {
	seen := make(map[*Inode]*winode)
	rw := &winode{in: root, ft: ftDir}
	rw.parent = rw
	seen[root] = rw
	ws := []*winode{rw}
	for i := 0; i < len(ws); i++ {
		d := ws[i]
		if d.ft != ftDir {
			continue
		}
		ents := slices.Clone(d.in.Entries)
		slices.SortFunc(ents, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
		d.nlink = 2
		des := make([]dirent, 0, len(ents)+2)
		des = append(des, dirent{".", d}, dirent{"..", d.parent})
		for j, e := range ents {
			if err := checkName(e.Name); err != nil {
				return nil, err
			}
			if j > 0 && ents[j-1].Name == e.Name {
				return nil, fmt.Errorf("%w: duplicate name %q", ErrInvalidTree, e.Name)
			}
			if e.Inode == nil {
				return nil, fmt.Errorf("%w: %q: nil inode", ErrInvalidTree, e.Name)
			}
			w, ok := seen[e.Inode]
			if !ok {
				ft, err := fileType(e.Inode.Mode)
				if err != nil {
					return nil, fmt.Errorf("%w (entry %q)", err, e.Name)
				}
				w = &winode{in: e.Inode, ft: ft, parent: d}
				seen[e.Inode] = w
				ws = append(ws, w)
			} else if w.ft == ftDir {
				return nil, fmt.Errorf("%w: directory %q linked twice", ErrInvalidTree, e.Name)
			}
			if w.ft == ftDir {
				d.nlink++
			} else {
				w.nlink++
			}
			des = append(des, dirent{e.Name, w})
		}
		slices.SortFunc(des, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
		d.dir = packDir(des)
		if n := len(d.dir); n > 0 {
			d.size = uint64(n-1)*BlockSize + uint64(d.dir[n-1].used)
		}
	}
	for i, w := range ws {
		w.ino = uint32(i + 1)
	}
	return ws, nil
}

// packDir fills directory blocks in name order: each block holds as many
// dirents and names as fit in BlockSize bytes.
func packDir(des []dirent) []dirBlock {
	var blocks []dirBlock
	cur := dirBlock{}
	for _, d := range des {
		need := DirentSize + len(d.name)
		if cur.used+need > BlockSize {
			blocks = append(blocks, cur)
			cur = dirBlock{}
		}
		cur.ents = append(cur.ents, d)
		cur.used += need
	}
	return append(blocks, cur)
}

// encode returns the bytes of directory block b; full blocks are padded
// with zeros so the last name ends at the first NUL.
func (b *dirBlock) encode(full bool) []byte {
	n := b.used
	if full {
		n = BlockSize
	}
	out := make([]byte, n)
	nameoff := DirentSize * len(b.ents)
	for i, e := range b.ents {
		Dirent(out[i*DirentSize:]).put(e.w.nid(), uint16(nameoff), e.w.ft)
		nameoff += copy(out[nameoff:], e.name)
	}
	return out
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w: bad name %q", ErrInvalidTree, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name of %d bytes exceeds %d", ErrInvalidTree, len(name), MaxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q contains '/' or NUL", ErrInvalidTree, name)
	}
	return nil
}

func fileType(mode uint32) (uint8, error) {
	if mode&^(ModeTypeMask|ModePermMask) != 0 {
		return 0, fmt.Errorf("%w: mode %#o has unknown bits", ErrInvalidTree, mode)
	}
	switch mode & ModeTypeMask {
	case ModeRegular:
		return ftRegFile, nil
	case ModeDir:
		return ftDir, nil
	case ModeChar:
		return ftChrdev, nil
	case ModeBlock:
		return ftBlkdev, nil
	case ModeFifo:
		return ftFifo, nil
	case ModeSocket:
		return ftSock, nil
	case ModeSymlink:
		return ftSymlink, nil
	}
	return ftUnknown, fmt.Errorf("%w: mode %#o has no file type", ErrInvalidTree, mode)
}

// prepare validates one inode and fills its size, xattrs and form.
func prepare(w *winode, buildSec int64, buildNsec uint32) error {
	in := w.in
	switch w.ft {
	case ftRegFile:
		if in.Size < 0 || (in.Size > 0 && in.Data == nil) {
			return fmt.Errorf("%w: regular file (ino %d) size %d without data", ErrInvalidTree, w.ino, in.Size)
		}
		w.size = uint64(in.Size)
	case ftSymlink:
		if in.Target == "" || len(in.Target) >= BlockSize || strings.IndexByte(in.Target, 0) >= 0 {
			return fmt.Errorf("%w: symlink target of %d bytes (want 1 to %d, no NUL)", ErrInvalidTree, len(in.Target), BlockSize-1)
		}
		w.size = uint64(len(in.Target))
	case ftChrdev, ftBlkdev:
		if in.Major >= 1<<12 || in.Minor >= 1<<20 {
			return fmt.Errorf("%w: device %d:%d beyond a 32-bit dev_t", ErrInvalidTree, in.Major, in.Minor)
		}
	}
	xs := slices.Clone(in.Xattrs)
	slices.SortFunc(xs, func(a, b Xattr) int { return cmp.Compare(a.Name, b.Name) })
	var err error
	if w.xattrs, w.icount, err = encodeXattrs(xs); err != nil {
		return err
	}
	w.compact = in.UID <= math.MaxUint16 && in.GID <= math.MaxUint16 &&
		w.nlink <= math.MaxUint16 && w.size <= math.MaxUint32 &&
		in.Mtime == buildSec && in.MtimeNsec == buildNsec
	return nil
}

// place puts w at the first 32-byte slot at or after pos and returns the
// end of what it occupies. The inode core never crosses a block; the inline
// tail never crosses one either (Linux rejects that as corruption), so a
// tail that would is either moved with its inode to the next block or
// stored in a data block of its own, whichever wastes fewer bytes.
func place(w *winode, pos int64) int64 {
	pos = alignUp(pos, SlotSize)
	if pos%BlockSize+w.isize() > BlockSize {
		pos = alignUp(pos, BlockSize)
	}
	hdr := w.isize() + int64(len(w.xattrs))
	tail := int64(w.size % BlockSize)
	w.inline = false
	if tail > 0 {
		switch {
		case (pos+hdr)%BlockSize+tail <= BlockSize:
			w.inline = true
		default:
			npos := alignUp(pos, BlockSize)
			if (npos+hdr)%BlockSize+tail <= BlockSize && npos-pos < BlockSize-tail {
				pos = npos
				w.inline = true
			}
		}
	}
	w.pos = pos
	return pos + hdr + w.tail()
}

func writeImage(ctx context.Context, cw *countWriter, sb SuperBlock, ws []*winode, metaBlocks int64) error {
	if err := cw.padTo(SuperBlockOffset); err != nil {
		return err
	}
	if err := cw.write(sb); err != nil {
		return err
	}
	core := make([]byte, InodeExtendedSize)
	for i, w := range ws {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := cw.padTo(w.pos); err != nil {
			return err
		}
		if err := cw.write(w.core(core)); err != nil {
			return err
		}
		if err := cw.write(w.xattrs); err != nil {
			return err
		}
		if w.inline && w.tail() > 0 {
			if err := w.writeData(ctx, cw, w.nblocks*BlockSize, w.tail(), false); err != nil {
				return err
			}
		}
	}
	if err := cw.padTo(metaBlocks * BlockSize); err != nil {
		return err
	}
	for _, w := range ws {
		if w.nblocks == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if cw.n != int64(w.blkaddr)*BlockSize {
			panic("erofs: data block out of place") // impossible: blocks are assigned in this same order
		}
		n := min(int64(w.size), w.nblocks*BlockSize)
		if err := w.writeData(ctx, cw, 0, n, true); err != nil {
			return err
		}
		if err := cw.padTo(int64(w.blkaddr+uint32(w.nblocks)) * BlockSize); err != nil {
			return err
		}
	}
	return nil
}

// core encodes the inode core into buf and returns it.
func (w *winode) core(buf []byte) []byte {
	in := w.in
	mode := uint16(in.Mode)
	var u uint32
	switch w.ft {
	case ftChrdev, ftBlkdev:
		u = encodeDev(in.Major, in.Minor)
	case ftRegFile, ftDir, ftSymlink:
		u = w.blkaddr
	}
	layout := uint16(layoutFlatPlain)
	if w.inline {
		layout = layoutFlatInline
	}
	if w.compact {
		b := InodeCompact(buf[:InodeCompactSize])
		b.put(formatCompact|layout<<1, w.icount, mode, uint16(w.nlink), uint32(w.size), u, w.ino, uint16(in.UID), uint16(in.GID))
		return b
	}
	b := InodeExtended(buf[:InodeExtendedSize])
	b.put(formatExtended|layout<<1, w.icount, mode, w.size, u, w.ino, in.UID, in.GID, uint64(in.Mtime), in.MtimeNsec, w.nlink)
	return b
}

// writeData writes n bytes of w's contents starting at off. Directory
// contents are produced from the block layout; full says whether directory
// blocks are padded to BlockSize (data area) or not (inline tail).
func (w *winode) writeData(ctx context.Context, cw *countWriter, off, n int64, full bool) error {
	switch w.ft {
	case ftSymlink:
		return cw.write([]byte(w.in.Target[off : off+n]))
	case ftDir:
		first := off / BlockSize
		for i := first; i < first+ceilDiv(n, BlockSize); i++ {
			last := i == int64(len(w.dir))-1
			if err := cw.write(w.dir[i].encode(full || !last)); err != nil {
				return err
			}
		}
		return nil
	}
	buf := cw.buf()
	for done := int64(0); done < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(n-done, int64(len(buf)))]
		m, err := w.in.Data.ReadAt(chunk, off+done)
		if m < len(chunk) {
			if err == nil || errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: inode %d: got %d of %d bytes", ErrShortData, w.ino, off+done+int64(m), w.in.Size)
			}
			return fmt.Errorf("erofs: inode %d: %w", w.ino, err)
		}
		if err := cw.write(chunk); err != nil {
			return err
		}
		done += int64(m)
	}
	return nil
}

// countWriter tracks the output offset.
type countWriter struct {
	w    *bufio.Writer
	n    int64
	copy []byte // file data buffer, allocated on first use
}

func (c *countWriter) buf() []byte {
	if c.copy == nil {
		c.copy = make([]byte, 1<<20)
	}
	return c.copy
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		err = fmt.Errorf("erofs: write: %w", err)
	}
	return n, err
}

func (c *countWriter) write(p []byte) error {
	_, err := c.Write(p)
	return err
}

var zeros [BlockSize]byte

func (c *countWriter) padTo(off int64) error {
	if off < c.n {
		panic(fmt.Sprintf("erofs: pad backwards from %d to %d", c.n, off)) // impossible: placement only moves forward
	}
	for c.n < off {
		if err := c.write(zeros[:min(off-c.n, BlockSize)]); err != nil {
			return err
		}
	}
	return nil
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

func ceilDiv(n, d int64) int64 { return (n + d - 1) / d }
