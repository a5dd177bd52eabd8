// SPDX-License-Identifier: Apache-2.0

package qcow2

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
)

// maxPendingFrees bounds the clusters waiting to be released; WriteAt
// flushes the metadata when it reaches it.
const maxPendingFrees = 1 << 16

// writeState is the state of a writable image. Every field is used only
// with Image.mu held exclusively.
type writeState struct {
	// nextFree is the next cluster to allocate: clusters are only ever
	// allocated at the end of the file, never reused.
	nextFree uint64
	// rt is the refcount table, at rtOff over rtClusters clusters; its
	// nonzero entries were checked to lie inside the file.
	rt         []uint64
	rtOff      uint64
	rtClusters uint64
	// meta holds the sorted offsets of the clusters holding metadata
	// (header, L1 and refcount tables, L2 tables, refcount blocks), so
	// that guest data is never written over them.
	meta []uint64
	// dirtyL1 holds the L1 indexes changed since the last flushMeta.
	dirtyL1 map[uint64]struct{}
	// frees holds host clusters that lost a reference in a mapping not
	// yet on disk; flushMeta drops their refcounts once it is.
	frees []uint64
	// scratch is one cluster, for copy-on-write.
	scratch []byte
	// growing is set while the refcount table grows.
	growing bool
	// broken, once set, fails every later write and Sync.
	broken error
}

// initWrite reads and checks what writing needs: the refcount table and
// the map of metadata clusters, which must not share a cluster. It clears
// the autoclear feature bits (see Open).
func (im *Image) initWrite(h *header) error {
	w := &im.w
	w.rtOff, w.rtClusters = h.refTableOff, uint64(h.refTableClus)
	var err error
	if w.rt, err = im.readTable("refcount table", w.rtOff, w.rtClusters<<im.cb/8); err != nil {
		return err
	}
	w.meta = []uint64{0} // the header
	for c := uint64(0); c < w.rtClusters; c++ {
		w.meta = append(w.meta, w.rtOff+c<<im.cb)
	}
	for c := h.l1Offset; c < h.l1Offset+uint64(h.l1Size)*8; c += im.cs {
		w.meta = append(w.meta, c)
	}
	for i, e := range w.rt {
		if e&refTableRsvd != 0 {
			return corrupt("refcount table entry %d (%#x) has reserved bits set", i, e)
		}
		if e != 0 {
			if err := im.checkCluster("refcount block", e); err != nil {
				return fmt.Errorf("refcount table entry %d: %w", i, err)
			}
			w.meta = append(w.meta, e)
		}
	}
	for _, e := range im.l1 {
		if off := e & offsetMask; off != 0 {
			w.meta = append(w.meta, off)
		}
	}
	slices.Sort(w.meta)
	for i := 1; i < len(w.meta); i++ {
		if w.meta[i] == w.meta[i-1] {
			return corrupt("two metadata structures share the cluster at %#x", w.meta[i])
		}
	}
	w.nextFree = (im.fileEnd + im.cs - 1) &^ (im.cs - 1)
	w.dirtyL1 = make(map[uint64]struct{})
	w.scratch = make([]byte, im.cs)
	if h.autoclear != 0 {
		var zero [8]byte
		if _, err := im.f.WriteAt(zero[:], hdrAutoclear); err != nil {
			return fmt.Errorf("qcow2: clear autoclear features: %w", err)
		}
		if err := im.f.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync: %w", err)
		}
	}
	return nil
}

// fail marks the image broken by err and returns the error every later
// write and Sync returns.
func (im *Image) fail(err error) error {
	if im.w.broken == nil {
		im.w.broken = fmt.Errorf("%w: %w", ErrBroken, err)
	}
	return im.w.broken
}

// writeCluster writes data at offset in of guest cluster gi. The caller
// holds mu exclusively.
//
// A standard cluster whose copied bit says its refcount is one is written
// in place, unless a hostile L2 entry points it at metadata. Anything else
// is copied on write, in this order, so that a crash at any point leaves
// at worst a leaked cluster:
//
//  1. The old contents (zeros, the old cluster, or the inflated compressed
//     one) merged with data are written to a new cluster at the end of the
//     file.
//  2. Its refcount is set to one (allocating refcount blocks, or a larger
//     refcount table, as needed).
//  3. The L2 entry is changed in the cached table (allocating an L2 table
//     first if the L1 entry is empty); flushMeta writes it after a sync.
//  4. The old host clusters are queued for release, which flushMeta does
//     only once the new entry is on disk.
func (im *Image) writeCluster(gi, in uint64, data []byte) error {
	l1i, l2i := gi>>im.l2Bits, gi&(1<<im.l2Bits-1)
	m := mapping{kind: kindUnallocated}
	var t *l2Table
	if l2 := im.l1[l1i] & offsetMask; l2 != 0 {
		var err error
		if t, err = im.l2Write(l2); err != nil {
			return err
		}
		if m, err = im.decode(binary.BigEndian.Uint64(t.data[l2i*8:])); err != nil {
			return err
		}
	}
	if m.kind == kindData && m.copied {
		if im.isMeta(m.host) {
			return corrupt("L2 entry %#x maps guest data onto metadata", m.entry)
		}
		if _, err := im.f.WriteAt(data, int64(m.host+in)); err != nil {
			return fmt.Errorf("qcow2: write data at %#x: %w", m.host+in, err)
		}
		return nil
	}

	buf := im.w.scratch
	if uint64(len(data)) < im.cs {
		switch m.kind {
		case kindData:
			if err := im.readData(buf, m.host); err != nil {
				return err
			}
		case kindCompressed:
			z, err := im.inflate(m)
			if err != nil {
				return err
			}
			copy(buf, z)
		default:
			clear(buf)
		}
	}
	copy(buf[in:], data)
	host, err := im.allocCluster(false)
	if err != nil {
		return err
	}
	if _, err := im.f.WriteAt(buf, int64(host)); err != nil {
		return fmt.Errorf("qcow2: write data at %#x: %w", host, err) // only leaves a hole
	}
	im.fileEnd = max(im.fileEnd, host+im.cs)
	if err := im.setRefcount(host, 1); err != nil {
		return im.fail(err)
	}
	if t == nil {
		if t, err = im.newL2Table(l1i); err != nil {
			return im.fail(err)
		}
	}
	binary.BigEndian.PutUint64(t.data[l2i*8:], host|entryCopied)
	im.cache.markDirty(t)
	im.release(m)
	return nil
}

// release queues the host clusters of a replaced mapping for a refcount
// decrement. A compressed cluster counts once in every host cluster its
// sectors touch.
func (im *Image) release(m mapping) {
	var first, last uint64
	switch m.kind {
	case kindData, kindZero:
		if m.host == 0 {
			return
		}
		first, last = m.host, m.host
	case kindCompressed:
		end := m.host&^(compressedUnit-1) + (m.nsec+1)*compressedUnit
		first, last = m.host&^(im.cs-1), (end-1)&^(im.cs-1)
	default:
		return
	}
	for c := first; c <= last; c += im.cs {
		// A hostile entry may name metadata or clusters past the end;
		// their refcounts are left alone.
		if c < im.w.nextFree && !im.isMeta(c) {
			im.w.frees = append(im.w.frees, c)
		}
	}
}

// allocCluster returns the next cluster at the end of the file, recording
// it as metadata if meta. Allocation order keeps w.meta sorted.
func (im *Image) allocCluster(meta bool) (uint64, error) {
	off := im.w.nextFree
	if off >= maxHostOffset-im.cs {
		return 0, fmt.Errorf("%w: the image file would pass 64 PiB", ErrTooLarge)
	}
	im.w.nextFree += im.cs
	if meta {
		im.w.meta = append(im.w.meta, off)
	}
	return off, nil
}

// newL2Table allocates an empty L2 table for L1 entry l1i and points the
// cached L1 entry at it (written by flushMeta, after the table).
func (im *Image) newL2Table(l1i uint64) (*l2Table, error) {
	off, err := im.allocCluster(true)
	if err != nil {
		return nil, err
	}
	if err := im.setRefcount(off, 1); err != nil {
		return nil, err
	}
	im.fileEnd = max(im.fileEnd, off+im.cs)
	t, err := im.cacheNew(off, make([]byte, im.cs))
	if err != nil {
		return nil, err
	}
	im.cache.markDirty(t)
	im.l1[l1i] = off | entryCopied
	im.w.dirtyL1[l1i] = struct{}{}
	return t, nil
}

// refIndex returns the refcount table index and the byte offset inside the
// refcount block of the cluster at off. A block holds cs/2 16-bit counts.
func (im *Image) refIndex(off uint64) (table, inBlock uint64) {
	c := off >> im.cb
	perBlock := im.cs / refcountBytes
	return c / perBlock, c % perBlock * refcountBytes
}

// setRefcount sets the refcount of the cluster at off, allocating its
// refcount block, or growing the refcount table, first if needed.
func (im *Image) setRefcount(off uint64, v uint16) error {
	b, in := im.refIndex(off)
	if b >= uint64(len(im.w.rt)) {
		if im.w.growing {
			return fmt.Errorf("qcow2: refcount table grown too little (needs entry %d of %d)", b, len(im.w.rt))
		}
		if err := im.growRefTable(b); err != nil {
			return err
		}
	}
	block := im.w.rt[b]
	if block == 0 {
		var err error
		if block, err = im.newRefBlock(b); err != nil {
			return err
		}
	}
	var be [refcountBytes]byte
	binary.BigEndian.PutUint16(be[:], v)
	if _, err := im.f.WriteAt(be[:], int64(block+in)); err != nil {
		return fmt.Errorf("qcow2: write refcount at %#x: %w", block+in, err)
	}
	return nil
}

// decRefcount drops the refcount of the cluster at off by one. A count
// that is already zero, or has no block, is left alone: only a corrupt
// image has one, and no cluster is ever reused.
func (im *Image) decRefcount(off uint64) error {
	b, in := im.refIndex(off)
	if b >= uint64(len(im.w.rt)) || im.w.rt[b] == 0 {
		return nil
	}
	pos := im.w.rt[b] + in
	var be [refcountBytes]byte
	if err := readFull(im.f, be[:], pos, "refcount"); err != nil {
		return err
	}
	v := binary.BigEndian.Uint16(be[:])
	if v == 0 {
		return nil
	}
	binary.BigEndian.PutUint16(be[:], v-1)
	if _, err := im.f.WriteAt(be[:], int64(pos)); err != nil {
		return fmt.Errorf("qcow2: write refcount at %#x: %w", pos, err)
	}
	return nil
}

// newRefBlock allocates the refcount block for refcount table entry b.
// The block is written, and synced, before the table points at it. It
// counts itself when it falls in its own range; otherwise its count goes
// into the next block.
func (im *Image) newRefBlock(b uint64) (uint64, error) {
	off, err := im.allocCluster(true)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, im.cs)
	ob, oin := im.refIndex(off)
	if ob == b {
		binary.BigEndian.PutUint16(buf[oin:], 1)
	}
	if _, err := im.f.WriteAt(buf, int64(off)); err != nil {
		return 0, fmt.Errorf("qcow2: write refcount block at %#x: %w", off, err)
	}
	im.fileEnd = max(im.fileEnd, off+im.cs)
	if err := im.f.Sync(); err != nil {
		return 0, fmt.Errorf("qcow2: sync: %w", err)
	}
	im.w.rt[b] = off
	var be [8]byte
	binary.BigEndian.PutUint64(be[:], off)
	if _, err := im.f.WriteAt(be[:], int64(im.w.rtOff+b*8)); err != nil {
		return 0, fmt.Errorf("qcow2: write refcount table entry %d: %w", b, err)
	}
	if ob != b {
		if err := im.setRefcount(off, 1); err != nil {
			return 0, err
		}
	}
	return off, nil
}

// growRefTable moves the refcount table to a larger one at the end of the
// file that has entry need:
//
//  1. Size the new table so it also covers itself and the refcount blocks
//     that will count it.
//  2. Allocate it, set its clusters' refcounts (allocating blocks, whose
//     entries go straight into the new table).
//  3. Write the whole table and sync.
//  4. Point the header at it (offset and cluster count are adjacent, one
//     write) and sync.
//  5. Release the old table's clusters.
//
// A crash before step 4 leaves the old table in force and the new
// clusters unreferenced.
func (im *Image) growRefTable(need uint64) error {
	w := &im.w
	perCluster := im.cs / 8
	perBlock := im.cs / refcountBytes
	n := max(2*w.rtClusters, 1)
	for {
		end := w.nextFree + (n+n/perBlock+4)*im.cs
		last := max(need, (end>>im.cb)/perBlock)
		if last < n*perCluster {
			break
		}
		n = last/perCluster + 1
	}
	if n > maxRefTableBytes>>im.cb {
		return fmt.Errorf("%w: the refcount table would need %d clusters, above the %d-byte limit", ErrTooLarge, n, maxRefTableBytes)
	}
	start := w.nextFree
	for range n {
		if _, err := im.allocCluster(true); err != nil {
			return err
		}
	}
	oldOff, oldClusters := w.rtOff, w.rtClusters
	rt := make([]uint64, n*perCluster)
	copy(rt, w.rt)
	w.rt, w.rtOff, w.rtClusters = rt, start, n
	w.growing = true
	defer func() { w.growing = false }()
	for c := range n {
		if err := im.setRefcount(start+c<<im.cb, 1); err != nil {
			return err
		}
	}
	buf := make([]byte, n<<im.cb)
	for i, e := range w.rt {
		binary.BigEndian.PutUint64(buf[i*8:], e)
	}
	if _, err := im.f.WriteAt(buf, int64(start)); err != nil {
		return fmt.Errorf("qcow2: write refcount table: %w", err)
	}
	im.fileEnd = max(im.fileEnd, start+n<<im.cb)
	if err := im.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync: %w", err)
	}
	var hdr [12]byte // refcount_table_offset, refcount_table_clusters
	binary.BigEndian.PutUint64(hdr[:8], start)
	binary.BigEndian.PutUint32(hdr[8:], uint32(n))
	if _, err := im.f.WriteAt(hdr[:], hdrRefTableOffset); err != nil {
		return fmt.Errorf("qcow2: write header: %w", err)
	}
	if err := im.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync: %w", err)
	}
	for c := range oldClusters {
		if err := im.decRefcount(oldOff + c<<im.cb); err != nil {
			return err
		}
	}
	return nil
}

// flushMeta writes the cached metadata changes in an order that keeps the
// file consistent at every step, with a sync between steps:
//
//  1. Sync: the data clusters and refcounts written so far reach the disk
//     before any table points at them.
//  2. Write the dirty L2 tables.
//  3. If L1 entries changed: sync (new L2 tables are on disk), then write
//     the entries.
//  4. If clusters await release: sync (no entry on disk still points at
//     them), then drop their refcounts.
//
// It leaves the last step's writes unsynced; Sync adds the final sync.
func (im *Image) flushMeta() error {
	w := &im.w
	dirty := im.cache.dirty()
	if len(dirty) == 0 && len(w.dirtyL1) == 0 && len(w.frees) == 0 {
		return nil
	}
	if err := im.f.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync: %w", err)
	}
	for _, off := range slices.Sorted(maps.Keys(dirty)) {
		t := dirty[off]
		if _, err := im.f.WriteAt(t.data, int64(off)); err != nil {
			return fmt.Errorf("qcow2: write L2 table at %#x: %w", off, err)
		}
		im.cache.markClean(t)
	}
	if len(w.dirtyL1) > 0 {
		if err := im.f.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync: %w", err)
		}
		for _, i := range slices.Sorted(maps.Keys(w.dirtyL1)) {
			var be [8]byte
			binary.BigEndian.PutUint64(be[:], im.l1[i])
			if _, err := im.f.WriteAt(be[:], int64(im.l1Offset+i*8)); err != nil {
				return fmt.Errorf("qcow2: write L1 entry %d: %w", i, err)
			}
			delete(w.dirtyL1, i)
		}
	}
	if len(w.frees) > 0 {
		if err := im.f.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync: %w", err)
		}
		for len(w.frees) > 0 {
			if err := im.decRefcount(w.frees[0]); err != nil {
				return err
			}
			w.frees = w.frees[1:]
		}
		w.frees = nil
	}
	return nil
}
