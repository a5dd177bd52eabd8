// SPDX-License-Identifier: Apache-2.0

package qcow2

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// file is what an Image needs of its file; *os.File implements it. Tests
// substitute a recorder.
type file interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

// Image is an open qcow2 image served as a flat disk of Size bytes. ReadAt
// may be called from any number of goroutines at once; WriteAt, Sync and
// Close take an exclusive lock, so they wait for reads in progress and
// block new ones while they run.
type Image struct {
	f        file
	readOnly bool
	version  uint32
	cb       uint   // cluster_bits
	cs       uint64 // cluster size, 1<<cb
	l2Bits   uint   // bits of an L2 index, cb-3
	compBits uint   // offset bits of a compressed descriptor, 62-(cb-8)
	size     uint64 // virtual size in bytes
	l1Offset uint64

	cache cache // has its own lock; see cache.go

	mu     sync.RWMutex // readers hold it shared; writers, Sync and Close exclusively
	closed bool         // guarded by mu
	// fileEnd is the end of the file as the image uses it: the size at
	// Open, raised past every cluster allocated since. A table or data
	// offset at or beyond it is corrupt. Guarded by mu.
	fileEnd uint64
	// l1 holds the active L1 entries that map [0, size), validated at
	// Open. Guarded by mu; changed only with mu held exclusively.
	l1 []uint64
	w  writeState // used only with mu held exclusively; see alloc.go
}

var (
	_ io.ReaderAt = (*Image)(nil)
	_ io.WriterAt = (*Image)(nil)
)

// Open reads and validates the qcow2 image in f and returns it ready to
// serve. f must be open for reading, and for writing too unless readOnly.
// On success the Image owns f: Close closes it. When Open fails, the
// caller still owns f.
//
// The image is untrusted input (a user may mount any file they
// downloaded). Open checks every header field, the L1 table and, for
// writing, the refcount table against the file size and the limits of the
// package, and refuses what it does not implement with an error matching
// ErrUnsupported (backing files, encryption, external data files, extended
// L2 entries, compression other than deflate, unknown incompatible
// features) or ErrMarkedCorrupt. Opening for writing further refuses a
// dirty image (ErrDirty), internal snapshots (ErrSnapshots) and refcounts
// other than 16 bits wide (ErrRefcountWidth); read-only images may have
// all three. Open allocates at most a few times the size of the tables it
// reads, which all lie inside the file.
//
// A writable Open clears the autoclear feature bits, as the format
// requires of a writer that does not maintain those features: persistent
// dirty bitmaps, which writes would make stale, are then ignored by QEMU,
// and qemu-img check reports their clusters as leaked (qemu-img check -r
// leaks reclaims them; removing the bitmaps with qemu-img bitmap --remove
// first avoids it).
func Open(f *os.File, readOnly bool) (*Image, error) {
	// Seek rather than Stat: a block device reports size 0 in Stat.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("qcow2: size of %s: %w", f.Name(), err)
	}
	return open(f, uint64(size), readOnly)
}

// open is Open over any file of fileSize bytes.
func open(f file, fileSize uint64, readOnly bool) (*Image, error) {
	first := make([]byte, min(fileSize, headerReadSize))
	if err := readFull(f, first, 0, "header"); err != nil {
		return nil, err
	}
	h, err := parseHeader(first, fileSize, func(n uint64) ([]byte, error) {
		b := make([]byte, n)
		return b, readFull(f, b, 0, "header cluster")
	})
	if err != nil {
		return nil, err
	}
	if !readOnly {
		switch {
		case h.incompatible&incDirty != 0:
			return nil, fmt.Errorf("%w: its refcounts may be stale; repair it with qemu-img check -r all, or open it read-only", ErrDirty)
		case h.nbSnapshots > 0:
			return nil, unsupported(ErrSnapshots, "%d snapshots; open it read-only, delete them with qemu-img snapshot -d, or convert the image", h.nbSnapshots)
		case h.refcountOrd != refcountOrder16:
			return nil, unsupported(ErrRefcountWidth, "%d-bit refcounts; convert it with qemu-img convert -O qcow2 -o refcount_bits=16, or open it read-only", 1<<h.refcountOrd)
		}
	}
	im := &Image{
		f:        f,
		readOnly: readOnly,
		version:  h.version,
		cb:       h.clusterBits,
		cs:       1 << h.clusterBits,
		l2Bits:   h.clusterBits - 3,
		compBits: 62 - (h.clusterBits - 8),
		size:     h.size,
		l1Offset: h.l1Offset,
		fileEnd:  fileSize,
	}
	im.cache.init(im.cs)
	if im.l1, err = im.readTable("L1 table", h.l1Offset, h.l1Needed()); err != nil {
		return nil, err
	}
	for i, e := range im.l1 {
		if e&l1Reserved != 0 {
			return nil, corrupt("L1 entry %d (%#x) has reserved bits set", i, e)
		}
		if off := e & offsetMask; off != 0 {
			if err := im.checkCluster("L2 table", off); err != nil {
				return nil, fmt.Errorf("L1 entry %d: %w", i, err)
			}
		}
	}
	if !readOnly {
		if err := im.initWrite(h); err != nil {
			return nil, err
		}
	}
	return im, nil
}

// readTable reads n big-endian u64 entries at off, which the caller has
// checked lie inside the file.
func (im *Image) readTable(what string, off, n uint64) ([]uint64, error) {
	buf := make([]byte, n*8)
	if err := readFull(im.f, buf, off, what); err != nil {
		return nil, err
	}
	t := make([]uint64, n)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	return t, nil
}

// checkCluster checks that a whole cluster of metadata at off is aligned
// and inside the file.
func (im *Image) checkCluster(what string, off uint64) error {
	if off%im.cs != 0 {
		return corrupt("%s offset %#x is not aligned to the %d-byte cluster", what, off, im.cs)
	}
	if off > im.fileEnd || im.cs > im.fileEnd-off {
		return corrupt("%s at %#x extends past the end of the %d-byte file", what, off, im.fileEnd)
	}
	return nil
}

// readFull reads len(b) bytes at off; a short file is corrupt. An empty
// read does nothing (off may then be anything, such as the L1 offset of an
// empty disk).
func readFull(f io.ReaderAt, b []byte, off uint64, what string) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		if errors.Is(err, io.EOF) {
			return corrupt("%s of %d bytes at %#x is past the end of the file", what, len(b), off)
		}
		return fmt.Errorf("qcow2: read %s at %#x: %w", what, off, err)
	}
	return nil
}

// Size returns the virtual disk size in bytes.
func (im *Image) Size() uint64 { return im.size }

// ClusterSize returns the cluster size in bytes.
func (im *Image) ClusterSize() uint64 { return im.cs }

// ReadOnly reports whether the image was opened read-only.
func (im *Image) ReadOnly() bool { return im.readOnly }

// ReadAt implements io.ReaderAt over the virtual disk. Unallocated and zero
// clusters read as zeros; compressed clusters are inflated. A read that
// reaches Size returns the bytes before it and io.EOF. A bad L2 entry or
// undecodable compressed data met on the way returns an error wrapping
// ErrCorrupt (and n == 0; p may have been written). Safe for concurrent
// use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: read at negative offset %d", ErrRange, off)
	}
	im.mu.RLock()
	defer im.mu.RUnlock()
	if im.closed {
		return 0, ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if uint64(off) >= im.size {
		return 0, io.EOF
	}
	var eof error
	if rest := im.size - uint64(off); uint64(len(p)) > rest {
		p, eof = p[:rest], io.EOF
	}
	if err := im.read(p, uint64(off)); err != nil {
		return 0, err
	}
	return len(p), eof
}

// read fills p from the virtual disk at off, inside [0, size). Guest
// clusters stored contiguously on the host are read with one call.
// The caller holds mu.
func (im *Image) read(p []byte, off uint64) error {
	var (
		runHost          uint64 // host offset of p[runStart:runEnd]
		runStart, runEnd int
	)
	flush := func() error {
		if runEnd == runStart {
			return nil
		}
		err := im.readData(p[runStart:runEnd], runHost)
		runStart = runEnd
		return err
	}
	for done := 0; done < len(p); {
		pos := off + uint64(done)
		in := pos & (im.cs - 1)
		n := int(min(im.cs-in, uint64(len(p)-done)))
		m, err := im.lookup(pos >> im.cb)
		if err != nil {
			return fmt.Errorf("guest offset %#x: %w", pos, err)
		}
		switch m.kind {
		case kindData:
			host := m.host + in
			if runEnd == done && runEnd > runStart && runHost+uint64(runEnd-runStart) == host {
				runEnd += n
				break
			}
			if err := flush(); err != nil {
				return err
			}
			runHost, runStart, runEnd = host, done, done+n
		case kindCompressed:
			if err := flush(); err != nil {
				return err
			}
			z, err := im.inflate(m)
			if err != nil {
				return fmt.Errorf("guest offset %#x: %w", pos, err)
			}
			copy(p[done:done+n], z[in:])
		default:
			if err := flush(); err != nil {
				return err
			}
			clear(p[done : done+n])
		}
		done += n
	}
	return flush()
}

// readData reads guest data stored at host, which lies inside the file.
// Bytes past the end of the file read as zeros, as QEMU reads them: a data
// cluster may be the last, partly written one.
func (im *Image) readData(b []byte, host uint64) error {
	n, err := im.f.ReadAt(b, int64(host))
	if errors.Is(err, io.EOF) {
		clear(b[n:])
		return nil
	}
	if err != nil {
		return fmt.Errorf("qcow2: read data at %#x: %w", host, err)
	}
	return nil
}

// Kinds of guest cluster.
const (
	kindUnallocated = iota // reads as zeros; no host cluster
	kindZero               // reads as zeros; host may hold a preallocated cluster
	kindData               // stored at host
	kindCompressed         // deflated at host, nsec more 512-byte sectors
)

// mapping is a decoded L2 entry.
type mapping struct {
	kind   int
	host   uint64 // cluster offset, or the byte offset of compressed data
	nsec   uint64 // compressed: additional 512-byte sectors
	copied bool   // standard: refcount is exactly one
	entry  uint64 // the raw entry
}

// lookup returns the mapping of guest cluster gi, which lies below size.
// The caller holds mu.
func (im *Image) lookup(gi uint64) (mapping, error) {
	l2 := im.l1[gi>>im.l2Bits] & offsetMask
	if l2 == 0 {
		return mapping{kind: kindUnallocated}, nil
	}
	t, err := im.l2Read(l2)
	if err != nil {
		return mapping{}, err
	}
	i := gi & (1<<im.l2Bits - 1)
	return im.decode(binary.BigEndian.Uint64(t[i*8:]))
}

// decode checks and decodes an L2 entry from the file. The caller holds
// mu.
func (im *Image) decode(e uint64) (mapping, error) {
	if e&entryCompressed != 0 {
		if e&entryCopied != 0 {
			return mapping{}, corrupt("compressed L2 entry %#x has the copied bit set", e)
		}
		m := mapping{
			kind:  kindCompressed,
			host:  e & (1<<im.compBits - 1),
			nsec:  (e &^ entryCompressed) >> im.compBits,
			entry: e,
		}
		if m.host >= maxHostOffset || m.host >= im.fileEnd {
			return mapping{}, corrupt("compressed cluster at %#x is past the end of the %d-byte file", m.host, im.fileEnd)
		}
		return m, nil
	}
	if e&l2Reserved != 0 {
		return mapping{}, corrupt("L2 entry %#x has reserved bits set", e)
	}
	m := mapping{host: e & offsetMask, copied: e&entryCopied != 0, entry: e}
	if m.host%im.cs != 0 {
		return mapping{}, corrupt("L2 entry %#x: cluster offset is not aligned to the %d-byte cluster", e, im.cs)
	}
	if e&entryZero != 0 {
		if im.version < 3 {
			return mapping{}, corrupt("L2 entry %#x has the zero bit set in a version 2 image", e)
		}
		m.kind = kindZero
		return m, nil
	}
	if m.host == 0 {
		if m.copied {
			return mapping{}, corrupt("L2 entry %#x maps a cluster at offset 0", e)
		}
		return mapping{kind: kindUnallocated}, nil
	}
	if m.host >= im.fileEnd {
		return mapping{}, corrupt("L2 entry %#x points past the end of the %d-byte file", e, im.fileEnd)
	}
	m.kind = kindData
	return m, nil
}

// inflate returns the guest cluster of a compressed mapping. The data is
// the raw deflate stream starting at m.host and ending at most at the end
// of its last sector (clipped to the file); it must inflate to at least a
// cluster, and anything after the cluster is ignored. The result is
// shared and must not be modified. The caller holds mu.
func (im *Image) inflate(m mapping) ([]byte, error) {
	if z := im.cache.inflated(m.entry); z != nil {
		return z, nil
	}
	// host < 2^56 and nsec < 2^(cb-8): no overflow.
	end := min(m.host&^(compressedUnit-1)+(m.nsec+1)*compressedUnit, im.fileEnd)
	in := make([]byte, end-m.host)
	n, err := im.f.ReadAt(in, int64(m.host))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qcow2: read compressed cluster at %#x: %w", m.host, err)
	}
	out := make([]byte, im.cs)
	r := inflaters.Get().(io.ReadCloser)
	defer inflaters.Put(r)
	if err := r.(flate.Resetter).Reset(bytes.NewReader(in[:n]), nil); err != nil {
		return nil, corrupt("compressed cluster at %#x: %v", m.host, err)
	}
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, corrupt("compressed cluster at %#x does not inflate to %d bytes: %v", m.host, im.cs, err)
	}
	im.cache.setInflated(m.entry, out)
	return out, nil
}

// inflaters pools deflate readers, whose state is a few tens of KiB.
var inflaters = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}

// WriteAt implements io.WriterAt over the virtual disk. A write inside an
// allocated cluster goes to it in place; any other (into an unallocated,
// zero or compressed cluster) copies the cluster into a new one at the end
// of the file and maps it there. It returns ErrReadOnly on a read-only
// image and ErrRange, writing nothing, when [off, off+len(p)) is not
// inside [0, Size()). A bad L2 entry met on the way returns an error
// wrapping ErrCorrupt, with n counting the bytes written before it.
//
// New mappings reach the file's L2 and L1 tables at the next Sync or
// Close, or when enough accumulate; see doc.go for the write order.
func (im *Image) WriteAt(p []byte, off int64) (int, error) {
	if im.readOnly {
		return 0, ErrReadOnly
	}
	if off < 0 || uint64(off) > im.size || uint64(len(p)) > im.size-uint64(off) {
		return 0, fmt.Errorf("%w: write of %d bytes at %d on a %d-byte disk", ErrRange, len(p), off, im.size)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return 0, ErrClosed
	}
	if im.w.broken != nil {
		return 0, im.w.broken
	}
	defer im.cache.setInflated(0, nil) // in-place writes may alias compressed data
	for done := 0; done < len(p); {
		pos := uint64(off) + uint64(done)
		in := pos & (im.cs - 1)
		n := int(min(im.cs-in, uint64(len(p)-done)))
		if err := im.writeCluster(pos>>im.cb, in, p[done:done+n]); err != nil {
			return done, fmt.Errorf("guest offset %#x: %w", pos, err)
		}
		done += n
	}
	if len(im.w.frees) >= maxPendingFrees {
		if err := im.flushMeta(); err != nil {
			return len(p), im.fail(err)
		}
	}
	return len(p), nil
}

// Sync writes every pending mapping to the file and makes all completed
// writes durable. On a read-only image it does nothing.
func (im *Image) Sync() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return ErrClosed
	}
	if im.readOnly {
		return nil
	}
	if im.w.broken != nil {
		return im.w.broken
	}
	if err := im.flushMeta(); err != nil {
		return im.fail(err)
	}
	if err := im.f.Sync(); err != nil {
		return im.fail(fmt.Errorf("qcow2: sync: %w", err))
	}
	return nil
}

// Close writes pending mappings, in the same order as Sync but without
// its final sync, and closes the file. It waits for calls in progress, is idempotent
// and safe from any goroutine; only the first call returns an error.
func (im *Image) Close() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return nil
	}
	im.closed = true
	var err error
	if !im.readOnly && im.w.broken == nil {
		err = im.flushMeta()
	}
	if cerr := im.f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("qcow2: close: %w", cerr))
	}
	im.cache.reset()
	return err
}

// isMeta reports whether the cluster at off holds metadata (header, L1,
// L2 or refcount table or block). The caller holds mu exclusively.
func (im *Image) isMeta(off uint64) bool {
	_, found := slices.BinarySearch(im.w.meta, off)
	return found
}
