// SPDX-License-Identifier: Apache-2.0

package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"
)

// headerReadSize is how much of the file parseHeader needs: a version 3
// header up to and including compression_type, rounded to 8 bytes.
const headerReadSize = 112

// header is the decoded, validated image header.
type header struct {
	version      uint32
	clusterBits  uint
	size         uint64 // virtual size in bytes
	l1Size       uint32 // entries in the L1 table on disk
	l1Offset     uint64
	refTableOff  uint64
	refTableClus uint32
	nbSnapshots  uint32
	snapshotsOff uint64
	incompatible uint64
	autoclear    uint64
	refcountOrd  uint32
	headerLength uint32
}

// l1Needed returns the L1 entries needed to map h.size bytes.
func (h *header) l1Needed() uint64 {
	cs := uint64(1) << h.clusterBits
	clusters := (h.size + cs - 1) >> h.clusterBits // size <= 64 TiB: no overflow
	perL2 := cs / 8
	return (clusters + perL2 - 1) / perL2
}

// parseHeader decodes and validates the header from the start of the file,
// first (the first min(fileSize, headerReadSize) bytes), reading the rest of
// the first cluster with readFirst when it needs the header extensions.
// The header is registry- or user-supplied: every field is checked against
// the specification, the package's limits and fileSize before it is used,
// and every offset computation is overflow-safe.
//
// Checks are ordered so that an image using an unsupported feature is
// reported as such rather than as corrupt where both apply.
func parseHeader(first []byte, fileSize uint64, readFirst func(n uint64) ([]byte, error)) (*header, error) {
	be := binary.BigEndian
	if len(first) < 4 || be.Uint32(first[hdrMagic:]) != magic {
		return nil, ErrNotImage
	}
	if len(first) < headerV2Size {
		return nil, corrupt("file of %d bytes is shorter than the header", fileSize)
	}
	h := &header{
		version:      be.Uint32(first[hdrVersion:]),
		size:         be.Uint64(first[hdrSize:]),
		l1Size:       be.Uint32(first[hdrL1Size:]),
		l1Offset:     be.Uint64(first[hdrL1Offset:]),
		refTableOff:  be.Uint64(first[hdrRefTableOffset:]),
		refTableClus: be.Uint32(first[hdrRefTableSize:]),
		nbSnapshots:  be.Uint32(first[hdrNbSnapshots:]),
		snapshotsOff: be.Uint64(first[hdrSnapshotsOffset:]),
		refcountOrd:  refcountOrder16,
		headerLength: headerV2Size,
	}
	if h.version != 2 && h.version != 3 {
		return nil, unsupported(ErrVersion, "version %d (only 2 and 3 exist); convert it with qemu-img convert -O qcow2", h.version)
	}
	var compression byte
	if h.version == 3 {
		if len(first) < headerV3Size {
			return nil, corrupt("file of %d bytes is shorter than a version 3 header", fileSize)
		}
		h.incompatible = be.Uint64(first[hdrIncompatible:])
		h.autoclear = be.Uint64(first[hdrAutoclear:])
		h.refcountOrd = be.Uint32(first[hdrRefcountOrder:])
		h.headerLength = be.Uint32(first[hdrHeaderLength:])
		if h.headerLength < headerV3Size || h.headerLength%8 != 0 {
			return nil, corrupt("header_length %d is not a multiple of 8 of at least %d", h.headerLength, headerV3Size)
		}
		if h.headerLength > hdrCompressionType {
			if len(first) <= hdrCompressionType {
				return nil, corrupt("file of %d bytes is shorter than header_length %d", fileSize, h.headerLength)
			}
			compression = first[hdrCompressionType]
		}
	}

	cb := be.Uint32(first[hdrClusterBits:])
	if cb < minClusterBits {
		return nil, corrupt("cluster_bits %d is below the minimum %d", cb, minClusterBits)
	}
	if cb > maxClusterBits {
		return nil, unsupported(ErrClusterSize, "cluster_bits %d (clusters above 2 MiB); convert it with qemu-img convert -O qcow2 -o cluster_size=64k", cb)
	}
	h.clusterBits = uint(cb)
	cs := uint64(1) << cb
	if uint64(h.headerLength) > cs {
		return nil, corrupt("header_length %d exceeds the %d-byte cluster", h.headerLength, cs)
	}

	if off := be.Uint64(first[hdrBackingOffset:]); off != 0 {
		return nil, unsupported(ErrBackingFile, "the image is an overlay; flatten it with qemu-img convert -O qcow2 (which merges the backing chain) and mount the result")
	}
	if m := be.Uint32(first[hdrCryptMethod:]); m != 0 {
		return nil, unsupported(ErrEncrypted, "crypt_method %d; decrypt it with qemu-img convert (with --object secret and --image-opts) to a plain qcow2 or raw image", m)
	}

	// The feature name table only improves the message for unknown
	// features, so the extensions are read only then.
	if unknown := h.incompatible &^ incKnown; unknown != 0 {
		fn := featureNames(h, fileSize, readFirst)
		return nil, unsupported(ErrFeature, "incompatible feature bits %#x%s; convert it with a qemu-img that knows them", unknown, fn.describe(unknown))
	}
	if h.incompatible&incCorrupt != 0 {
		return nil, fmt.Errorf("%w: repair it with qemu-img check -r all, or convert it with qemu-img convert", ErrMarkedCorrupt)
	}
	if h.incompatible&incExternalData != 0 {
		return nil, unsupported(ErrExternalData, "convert it with qemu-img convert -O qcow2 to a self-contained image")
	}
	if h.incompatible&incExtendedL2 != 0 {
		return nil, unsupported(ErrExtendedL2, "convert it with qemu-img convert -O qcow2 -o extended_l2=off")
	}
	switch {
	case h.incompatible&incCompressionType != 0 && compression != 0:
		name := fmt.Sprintf("type %d", compression)
		if compression == 1 {
			name = "zstd"
		}
		return nil, unsupported(ErrCompression, "%s (only deflate/zlib is); convert it with qemu-img convert -O qcow2 -o compression_type=zlib", name)
	case compression != 0:
		return nil, corrupt("compression_type %d without the compression type feature bit", compression)
	}

	if h.size > maxVirtualSize {
		return nil, unsupported(ErrTooLarge, "virtual size %d bytes exceeds the %d-byte (64 TiB) limit", h.size, uint64(maxVirtualSize))
	}
	if h.refcountOrd > 6 {
		return nil, corrupt("refcount_order %d exceeds 6", h.refcountOrd)
	}

	// L1 table.
	need := h.l1Needed()
	if need*8 > maxL1Bytes {
		return nil, unsupported(ErrTooLarge, "a %d-byte disk with %d-byte clusters needs an L1 table of %d entries, above the %d-byte limit; convert it with a larger cluster size", h.size, cs, need, maxL1Bytes)
	}
	if uint64(h.l1Size) < need {
		return nil, corrupt("L1 table of %d entries cannot map %d bytes (needs %d)", h.l1Size, h.size, need)
	}
	if uint64(h.l1Size)*8 > maxL1Bytes {
		return nil, unsupported(ErrTooLarge, "L1 table of %d entries exceeds the %d-byte limit", h.l1Size, maxL1Bytes)
	}
	if h.l1Size > 0 {
		if err := checkRegion("L1 table", h.l1Offset, uint64(h.l1Size)*8, cs, fileSize); err != nil {
			return nil, err
		}
	}

	// Refcount table: needed only for writing, but a header pointing it
	// outside the file is corrupt either way.
	if h.refTableClus == 0 {
		return nil, corrupt("refcount table of 0 clusters")
	}
	if uint64(h.refTableClus) > maxRefTableBytes>>cb {
		return nil, unsupported(ErrTooLarge, "refcount table of %d clusters exceeds the %d-byte limit", h.refTableClus, maxRefTableBytes)
	}
	if err := checkRegion("refcount table", h.refTableOff, uint64(h.refTableClus)<<cb, cs, fileSize); err != nil {
		return nil, err
	}

	if h.nbSnapshots > 0 {
		if h.nbSnapshots > maxSnapshots {
			return nil, corrupt("%d snapshots exceed the format's %d", h.nbSnapshots, maxSnapshots)
		}
		if h.snapshotsOff == 0 || h.snapshotsOff%cs != 0 || h.snapshotsOff >= fileSize {
			return nil, corrupt("snapshot table offset %#x is unaligned or outside the %d-byte file", h.snapshotsOff, fileSize)
		}
	}

	// The header cluster, the L1 table and the refcount table must not
	// share a cluster.
	type region struct {
		name       string
		start, end uint64 // in clusters
	}
	regions := []region{
		{"header", 0, 1},
		{"refcount table", h.refTableOff >> cb, h.refTableOff>>cb + uint64(h.refTableClus)},
	}
	if h.l1Size > 0 {
		regions = append(regions, region{"L1 table", h.l1Offset >> cb, (h.l1Offset + uint64(h.l1Size)*8 + cs - 1) >> cb})
	}
	for i, a := range regions {
		for _, b := range regions[i+1:] {
			if a.start < b.end && b.start < a.end {
				return nil, corrupt("%s and %s overlap", a.name, b.name)
			}
		}
	}
	return h, nil
}

// checkRegion checks that n bytes at off are cluster-aligned, after the
// header cluster and inside the file, without overflow.
func checkRegion(what string, off, n, cs, fileSize uint64) error {
	if off%cs != 0 {
		return corrupt("%s offset %#x is not aligned to the %d-byte cluster", what, off, cs)
	}
	if off == 0 {
		return corrupt("%s at offset 0 overlaps the header", what)
	}
	if off > fileSize || n > fileSize-off {
		return corrupt("%s of %d bytes at %#x extends past the end of the %d-byte file", what, n, off, fileSize)
	}
	return nil
}

// names maps incompatible feature bits to their names from the image's
// feature name table.
type names [64]string

// describe returns " (name, name)" for the named bits of mask, or "".
func (n *names) describe(mask uint64) string {
	var got []string
	for mask != 0 {
		b := bits.TrailingZeros64(mask)
		mask &^= 1 << b
		if n[b] != "" {
			got = append(got, fmt.Sprintf("%d %q", b, n[b]))
		}
	}
	if len(got) == 0 {
		return ""
	}
	return " (" + strings.Join(got, ", ") + ")"
}

// featureNames reads the incompatible feature names from the header
// extensions. It is best effort: a malformed extension area only loses
// names.
func featureNames(h *header, fileSize uint64, readFirst func(n uint64) ([]byte, error)) *names {
	n := new(names)
	if h.version < 3 {
		return n
	}
	area, err := readFirst(min(fileSize, uint64(1)<<h.clusterBits))
	if err != nil {
		return n
	}
	be := binary.BigEndian
	for pos := uint64(h.headerLength); pos+8 <= uint64(len(area)); {
		typ, length := be.Uint32(area[pos:]), uint64(be.Uint32(area[pos+4:]))
		pos += 8
		if typ == extEnd || length > uint64(len(area))-pos {
			break
		}
		if typ == extFeatureNames {
			for e := pos; e+featureNameSize <= pos+length; e += featureNameSize {
				if area[e] == 0 && area[e+1] < 64 { // type 0: incompatible
					name, _, _ := strings.Cut(string(area[e+2:e+featureNameSize]), "\x00")
					n[area[e+1]] = name
				}
			}
		}
		pos += (length + 7) &^ 7
	}
	return n
}
