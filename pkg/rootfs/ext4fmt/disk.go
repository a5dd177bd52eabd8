// SPDX-License-Identifier: Apache-2.0

package ext4fmt

import (
	"encoding/binary"
	"time"
)

var le = binary.LittleEndian

// Superblock: struct ext4_super_block in fs/ext4/ext4.h, 1024 bytes at
// byte 1024 of the device and at the first block of each backup group.
// Offsets of the fields Format sets; every other field is zero.
const (
	superOffset = 1024
	superSize   = 1024

	sbInodesCount       = 0x00
	sbBlocksCount       = 0x04
	sbFreeBlocksCount   = 0x0C
	sbFreeInodesCount   = 0x10
	sbFirstDataBlock    = 0x14
	sbLogBlockSize      = 0x18
	sbLogClusterSize    = 0x1C
	sbBlocksPerGroup    = 0x20
	sbClustersPerGroup  = 0x24
	sbInodesPerGroup    = 0x28
	sbWtime             = 0x30
	sbMaxMntCount       = 0x36
	sbMagic             = 0x38
	sbState             = 0x3A
	sbErrors            = 0x3C
	sbLastCheck         = 0x40
	sbRevLevel          = 0x4C
	sbFirstIno          = 0x54
	sbInodeSize         = 0x58
	sbBlockGroupNr      = 0x5A
	sbFeatureCompat     = 0x5C
	sbFeatureIncompat   = 0x60
	sbFeatureROCompat   = 0x64
	sbUUID              = 0x68
	sbVolumeName        = 0x78
	sbHashSeed          = 0xEC
	sbDefHashVersion    = 0xFC
	sbDefaultMountOpts  = 0x100
	sbMkfsTime          = 0x108
	sbMinExtraIsize     = 0x15C
	sbWantExtraIsize    = 0x15E
	sbFlags             = 0x160
	sbFreeBlocksCountHi = 0x158

	superMagic     = 0xEF53
	stateValid     = 1 // EXT4_VALID_FS: cleanly unmounted
	errorsContinue = 1 // EXT4_ERRORS_CONTINUE, mke2fs's default
	dynamicRev     = 1 // EXT4_DYNAMIC_REV: variable inode size, features
	hashHalfMD4    = 1 // DX_HASH_HALF_MD4, mke2fs's default
	flagSignedHash = 1 // EXT2_FLAGS_SIGNED_HASH: what mke2fs on x86 records

	defmXattrUser = 0x0004 // EXT4_DEFM_XATTR_USER
	defmACL       = 0x0008 // EXT4_DEFM_ACL

	compatExtAttr  = 0x0008 // EXT4_FEATURE_COMPAT_EXT_ATTR
	compatDirIndex = 0x0020 // EXT4_FEATURE_COMPAT_DIR_INDEX

	incompatFiletype = 0x0002 // EXT4_FEATURE_INCOMPAT_FILETYPE
	incompatExtents  = 0x0040 // EXT4_FEATURE_INCOMPAT_EXTENTS

	roCompatSparseSuper = 0x0001 // EXT4_FEATURE_RO_COMPAT_SPARSE_SUPER
	roCompatLargeFile   = 0x0002 // EXT4_FEATURE_RO_COMPAT_LARGE_FILE
	roCompatHugeFile    = 0x0008 // EXT4_FEATURE_RO_COMPAT_HUGE_FILE
	roCompatGdtCsum     = 0x0010 // EXT4_FEATURE_RO_COMPAT_GDT_CSUM (uninit_bg)
	roCompatDirNlink    = 0x0020 // EXT4_FEATURE_RO_COMPAT_DIR_NLINK
	roCompatExtraIsize  = 0x0040 // EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE

	featureCompat   = compatExtAttr | compatDirIndex
	featureIncompat = incompatFiletype | incompatExtents
	featureROCompat = roCompatSparseSuper | roCompatLargeFile | roCompatHugeFile |
		roCompatGdtCsum | roCompatDirNlink | roCompatExtraIsize
)

// fsParams is what every superblock copy shares.
type fsParams struct {
	layout
	uuid     [16]byte
	hashSeed [16]byte
	label    string
	now      time.Time
}

// putSuper encodes the superblock copy of group g into b (superSize bytes).
func (p *fsParams) putSuper(b []byte, g uint32) {
	now := uint32(p.now.Unix())
	le.PutUint32(b[sbInodesCount:], p.inodes())
	le.PutUint32(b[sbBlocksCount:], p.blocks)
	free := p.freeBlocks()
	le.PutUint32(b[sbFreeBlocksCount:], uint32(free))
	le.PutUint32(b[sbFreeBlocksCountHi:], uint32(free>>32))
	le.PutUint32(b[sbFreeInodesCount:], p.inodes()-p.usedInodes(0))
	le.PutUint32(b[sbFirstDataBlock:], 0)
	le.PutUint32(b[sbLogBlockSize:], logBlockSize)
	le.PutUint32(b[sbLogClusterSize:], logBlockSize)
	le.PutUint32(b[sbBlocksPerGroup:], blocksPerGroup)
	le.PutUint32(b[sbClustersPerGroup:], blocksPerGroup)
	le.PutUint32(b[sbInodesPerGroup:], p.inodesPerGroup)
	le.PutUint32(b[sbWtime:], now)
	le.PutUint16(b[sbMaxMntCount:], 0xFFFF) // -1: no mount-count fsck
	le.PutUint16(b[sbMagic:], superMagic)
	le.PutUint16(b[sbState:], stateValid)
	le.PutUint16(b[sbErrors:], errorsContinue)
	le.PutUint32(b[sbLastCheck:], now)
	le.PutUint32(b[sbRevLevel:], dynamicRev)
	le.PutUint32(b[sbFirstIno:], firstIno)
	le.PutUint16(b[sbInodeSize:], inodeSize)
	le.PutUint16(b[sbBlockGroupNr:], uint16(g)) // truncated as mke2fs does
	le.PutUint32(b[sbFeatureCompat:], featureCompat)
	le.PutUint32(b[sbFeatureIncompat:], featureIncompat)
	le.PutUint32(b[sbFeatureROCompat:], featureROCompat)
	copy(b[sbUUID:sbUUID+16], p.uuid[:])
	copy(b[sbVolumeName:sbVolumeName+16], p.label)
	copy(b[sbHashSeed:sbHashSeed+16], p.hashSeed[:])
	b[sbDefHashVersion] = hashHalfMD4
	le.PutUint32(b[sbDefaultMountOpts:], defmXattrUser|defmACL)
	le.PutUint32(b[sbMkfsTime:], now)
	le.PutUint16(b[sbMinExtraIsize:], extraIsize)
	le.PutUint16(b[sbWantExtraIsize:], extraIsize)
	le.PutUint32(b[sbFlags:], flagSignedHash)
}

// Group descriptor: struct ext4_group_desc, the 32-byte form used without
// the 64bit feature.
const (
	bgBlockBitmap     = 0x00
	bgInodeBitmap     = 0x04
	bgInodeTable      = 0x08
	bgFreeBlocksCount = 0x0C
	bgFreeInodesCount = 0x0E
	bgUsedDirsCount   = 0x10
	bgFlags           = 0x12
	bgItableUnused    = 0x1C
	bgChecksum        = 0x1E

	bgInodeUninit  = 0x1 // EXT4_BG_INODE_UNINIT: inode bitmap not on disk
	bgBlockUninit  = 0x2 // EXT4_BG_BLOCK_UNINIT: block bitmap not on disk
	bgItableZeroed = 0x4 // EXT4_BG_INODE_ZEROED: no lazy itable init
)

// descFlags returns bg_flags of group g, chosen as mke2fs does: every group
// but 0 (which holds the root directory and lost+found) leaves its inode
// bitmap uninitialised, every group but 0 and the last (whose bitmap
// carries end-of-file-system padding) its block bitmap. The kernel and
// e2fsck compute an uninitialised bitmap from the geometry instead of
// reading it, so Format need not write it. Inode tables are holes, which
// read as zeros: all are marked zeroed, so the kernel starts no lazy
// initialisation thread that would write them out.
func (p *fsParams) descFlags(g uint32) uint16 {
	f := uint16(bgItableZeroed)
	if g != 0 {
		f |= bgInodeUninit
		if g != p.groups-1 {
			f |= bgBlockUninit
		}
	}
	return f
}

// putDesc encodes the descriptor of group g into b (descSize bytes).
func (p *fsParams) putDesc(b []byte, g uint32) {
	le.PutUint32(b[bgBlockBitmap:], uint32(p.blockBitmap(g)))
	le.PutUint32(b[bgInodeBitmap:], uint32(p.inodeBitmap(g)))
	le.PutUint32(b[bgInodeTable:], uint32(p.inodeTable(g)))
	le.PutUint16(b[bgFreeBlocksCount:], uint16(p.groupBlocks(g)-p.usedBlocks(g)))
	le.PutUint16(b[bgFreeInodesCount:], uint16(p.inodesPerGroup-p.usedInodes(g)))
	if g == 0 {
		le.PutUint16(b[bgUsedDirsCount:], 2) // / and /lost+found
	}
	le.PutUint16(b[bgFlags:], p.descFlags(g))
	le.PutUint16(b[bgItableUnused:], uint16(p.inodesPerGroup-p.usedInodes(g)))
	le.PutUint16(b[bgChecksum:], p.descChecksum(b[:descSize], g))
}

// descChecksum returns bg_checksum under gdt_csum (ext4_group_desc_csum in
// fs/ext4/super.c): crc16 over the file system UUID, the little-endian
// group number and the descriptor up to the checksum field (which is the
// last field of a 32-byte descriptor).
func (p *fsParams) descChecksum(desc []byte, g uint32) uint16 {
	var n [4]byte
	le.PutUint32(n[:], g)
	crc := crc16(0xFFFF, p.uuid[:])
	crc = crc16(crc, n[:])
	return crc16(crc, desc[:bgChecksum])
}

// crc16 updates crc with b as Linux's crc16 does (lib/crc16.c): the
// reflected polynomial 0x8005 (0xA001), no final inversion.
func crc16(crc uint16, b []byte) uint16 {
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// putBitmap sets bits [0, used) and the padding bits [valid, 8*blockSize)
// of a bitmap block: a group's allocated objects are always its first ones,
// and bits past the end of a short group or past s_inodes_per_group must
// be set (e2fsck checks the padding).
func putBitmap(b []byte, used, valid uint32) {
	setBits(b, 0, used)
	setBits(b, valid, 8*blockSize)
}

func setBits(b []byte, from, to uint32) {
	for ; from < to && from%8 != 0; from++ {
		b[from/8] |= 1 << (from % 8)
	}
	for ; from+8 <= to; from += 8 {
		b[from/8] = 0xFF
	}
	for ; from < to; from++ {
		b[from/8] |= 1 << (from % 8)
	}
}

// Inode: struct ext4_inode, inodeSize bytes with i_extra_isize 32.
const (
	iMode       = 0x00
	iUID        = 0x02
	iSizeLo     = 0x04
	iAtime      = 0x08
	iCtime      = 0x0C
	iMtime      = 0x10
	iGID        = 0x18
	iLinksCount = 0x1A
	iBlocksLo   = 0x1C
	iFlags      = 0x20
	iBlock      = 0x28 // i_block[15]: here the extent tree root
	iExtraIsize = 0x80
	iCtimeExtra = 0x84
	iMtimeExtra = 0x88
	iAtimeExtra = 0x8C
	iCrtime     = 0x90
	iCrtimeExta = 0x94

	modeDir     = 0o040000 // S_IFDIR
	extentsFlag = 0x80000  // EXT4_EXTENTS_FL

	// struct ext4_extent_header and struct ext4_extent in
	// fs/ext4/ext4_extents.h.
	extentMagic      = 0xF30A
	extentRootMax    = 4 // (60 - 12) / 12 entries fit in i_block
	extentHeaderSize = 12
)

// putDirInode encodes a directory inode owned by 0:0 whose blocks are the
// contiguous run [start, start+n), as a depth-0 extent tree in i_block.
func putDirInode(b []byte, perm uint16, links uint16, start uint64, n uint16, now time.Time) {
	le.PutUint16(b[iMode:], modeDir|perm)
	le.PutUint32(b[iSizeLo:], uint32(n)*blockSize)
	sec, extra := inodeTime(now)
	for _, off := range []int{iAtime, iCtime, iMtime, iCrtime} {
		le.PutUint32(b[off:], sec)
	}
	for _, off := range []int{iAtimeExtra, iCtimeExtra, iMtimeExtra, iCrtimeExta} {
		le.PutUint32(b[off:], extra)
	}
	le.PutUint16(b[iLinksCount:], links)
	le.PutUint32(b[iBlocksLo:], uint32(n)*blockSize/512) // 512-byte units
	le.PutUint32(b[iFlags:], extentsFlag)
	e := b[iBlock:]
	le.PutUint16(e[0:], extentMagic)
	le.PutUint16(e[2:], 1) // eh_entries
	le.PutUint16(e[4:], extentRootMax)
	// eh_depth 0 (leaf), eh_generation 0.
	x := e[extentHeaderSize:]
	le.PutUint32(x[0:], 0) // ee_block: first logical block
	le.PutUint16(x[4:], n) // ee_len
	le.PutUint16(x[6:], uint16(start>>32))
	le.PutUint32(x[8:], uint32(start))
	le.PutUint16(b[iExtraIsize:], extraIsize)
}

// inodeTime splits t into the 32-bit seconds field and the *_extra field:
// two epoch bits extending the seconds past 2038, then nanoseconds << 2
// (ext4_encode_extra_time).
func inodeTime(t time.Time) (sec, extra uint32) {
	s := t.Unix()
	return uint32(s), uint32((s-int64(int32(s)))>>32)&3 | uint32(t.Nanosecond())<<2
}

// Directory entry: struct ext4_dir_entry_2.
const ftDir = 2 // EXT4_FT_DIR

// putDirent encodes one entry at b and returns b after it; recLen 0 means
// the minimal length (8 + name, rounded up to 4).
func putDirent(b []byte, ino uint32, name string, ft uint8, recLen uint16) []byte {
	if recLen == 0 {
		recLen = uint16(8+len(name)+3) &^ 3
	}
	le.PutUint32(b[0:], ino)
	le.PutUint16(b[4:], recLen)
	b[6] = uint8(len(name))
	b[7] = ft
	copy(b[8:], name)
	return b[recLen:]
}
