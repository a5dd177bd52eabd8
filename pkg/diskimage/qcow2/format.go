// SPDX-License-Identifier: Apache-2.0

package qcow2

// On-disk format, from the qcow2 specification (docs/interop/qcow2.txt in
// the QEMU source tree). Every number is big-endian.
//
// Header, in the first cluster:
//
//	 0 magic "QFI\xfb"              36 l1_size u32 (entries)
//	 4 version u32 (2 or 3)          40 l1_table_offset u64
//	 8 backing_file_offset u64       48 refcount_table_offset u64
//	16 backing_file_size u32         56 refcount_table_clusters u32
//	20 cluster_bits u32              60 nb_snapshots u32
//	24 size u64 (virtual, bytes)     64 snapshots_offset u64
//	32 crypt_method u32              72 end of a version 2 header
//	version 3 only:
//	72 incompatible_features u64     96 refcount_order u32
//	80 compatible_features u64      100 header_length u32
//	88 autoclear_features u64       104 compression_type u8 (if header_length > 104)
//
// Header extensions follow header_length bytes into the first cluster,
// each a u32 type, a u32 length and the data padded to 8 bytes; type 0
// ends the list.
//
// Guest offsets map to host offsets through two levels of tables, one
// cluster of 8-byte entries per L2 table:
//
//	guest offset:  | L1 index | L2 index (cluster_bits-3 bits) | offset in cluster (cluster_bits) |
//	L1 entry:      63 copied | 62..56 reserved | 55..9 L2 table offset | 8..0 reserved
//	L2 entry:      63 copied | 62 compressed | 61..0 cluster descriptor
//	standard:      61..56 reserved | 55..9 cluster offset | 8..1 reserved | 0 reads as zero (v3)
//	compressed:    61..x additional 512-byte sectors | x-1..0 byte offset,  x = 62-(cluster_bits-8)
//
// Host clusters are reference-counted through a refcount table (contiguous
// clusters of 8-byte refcount block offsets) and refcount blocks (one
// cluster of 1<<refcount_order-bit counts each).

// Header field offsets.
const (
	hdrMagic           = 0
	hdrVersion         = 4
	hdrBackingOffset   = 8
	hdrClusterBits     = 20
	hdrSize            = 24
	hdrCryptMethod     = 32
	hdrL1Size          = 36
	hdrL1Offset        = 40
	hdrRefTableOffset  = 48
	hdrRefTableSize    = 56 // refcount_table_clusters, right after the offset
	hdrNbSnapshots     = 60
	hdrSnapshotsOffset = 64
	hdrIncompatible    = 72
	hdrCompatible      = 80
	hdrAutoclear       = 88
	hdrRefcountOrder   = 96
	hdrHeaderLength    = 100
	hdrCompressionType = 104

	headerV2Size = 72  // a version 2 header, also its header_length
	headerV3Size = 104 // the minimum version 3 header_length
)

// magic is "QFI\xfb".
const magic = 0x514649fb

// Incompatible feature bits (header offset 72).
const (
	incDirty           = 1 << 0 // refcounts may be inconsistent
	incCorrupt         = 1 << 1 // QEMU found corruption; do not write
	incExternalData    = 1 << 2 // guest clusters live in another file
	incCompressionType = 1 << 3 // compression_type is not zlib
	incExtendedL2      = 1 << 4 // 128-bit L2 entries with subclusters
	incKnown           = incDirty | incCorrupt | incExternalData | incCompressionType | incExtendedL2
)

// Header extension types.
const (
	extEnd          = 0x00000000
	extFeatureNames = 0x6803f857
)

// featureNameSize is the size of one feature name table entry: a type
// byte, a bit number and a 46-byte name.
const featureNameSize = 48

// Table entry fields.
const (
	entryCopied     = 1 << 63            // L1 and L2: refcount is exactly one
	entryCompressed = 1 << 62            // L2: compressed cluster
	entryZero       = 1 << 0             // L2, standard, v3: reads as zeros
	offsetMask      = 0x00fffffffffffe00 // bits 9..55: L1, L2 (standard) offsets
	l1Reserved      = 0x7f000000000001ff // bits 0..8 and 56..62
	l2Reserved      = 0x3f000000000001fe // standard: bits 1..8 and 56..61
	refTableRsvd    = 0x1ff              // refcount table entry: bits 0..8
	maxHostOffset   = 1 << 56            // L1 and L2 offsets are 56-bit
	compressedUnit  = 512                // the sector unit of compressed sizes
	refcountBytes   = 2                  // refcount_order 4: 16-bit counts
	refcountOrder16 = 4
)

// Limits. They bound what a hostile header can make Open allocate; every
// table read is also bounded by the file size.
const (
	minClusterBits = 9  // 512-byte clusters, the format's minimum
	maxClusterBits = 21 // 2 MiB, QEMU's implementation limit
	// maxVirtualSize is the largest virtual disk accepted, 64 TiB.
	maxVirtualSize = 64 << 40
	// maxL1Bytes bounds the active L1 table (QEMU uses the same limit,
	// so no image QEMU can open is refused for it).
	maxL1Bytes = 32 << 20
	// maxRefTableBytes bounds the refcount table, as QEMU does.
	maxRefTableBytes = 8 << 20
	// maxSnapshots is the most snapshots the format allows QEMU to write.
	maxSnapshots = 65536
)
