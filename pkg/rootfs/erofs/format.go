// SPDX-License-Identifier: Apache-2.0

package erofs

import "encoding/binary"

// Constants from Linux fs/erofs/erofs_fs.h.
const (
	// Magic is EROFS_SUPER_MAGIC_V1.
	Magic = 0xE0F5E1E2
	// SuperBlockOffset is EROFS_SUPER_OFFSET: the superblock starts at byte
	// 1024 of the image, leaving room for a boot sector.
	SuperBlockOffset = 1024
	// SuperBlockSize is sizeof(struct erofs_super_block).
	SuperBlockSize = 128
	// BlockSizeBits is the block size this package writes (4096 bytes, the
	// page size of every guest we boot).
	BlockSizeBits = 12
	// BlockSize is 1 << BlockSizeBits.
	BlockSize = 1 << BlockSizeBits
	// SlotSize is 1 << EROFS_ISLOTBITS: inodes are 32-byte aligned and a nid
	// is an inode's byte offset from the metadata start divided by 32.
	SlotSize = 32
	// InodeCompactSize is sizeof(struct erofs_inode_compact).
	InodeCompactSize = 32
	// InodeExtendedSize is sizeof(struct erofs_inode_extended).
	InodeExtendedSize = 64
	// DirentSize is sizeof(struct erofs_dirent).
	DirentSize = 12
	// XattrIbodyHeaderSize is sizeof(struct erofs_xattr_ibody_header).
	XattrIbodyHeaderSize = 12
	// XattrEntrySize is sizeof(struct erofs_xattr_entry), before the name.
	XattrEntrySize = 4
	// MaxNameLen is EROFS_NAME_LEN.
	MaxNameLen = 255
)

// i_format bits (erofs_fs.h: EROFS_I_VERSION_BIT 0, EROFS_I_DATALAYOUT_BIT 1).
const (
	formatCompact  = 0
	formatExtended = 1

	layoutFlatPlain  = 0 // EROFS_INODE_FLAT_PLAIN
	layoutFlatInline = 2 // EROFS_INODE_FLAT_INLINE
)

// File types of erofs_dirent.file_type (EROFS_FT_*).
const (
	ftUnknown = 0
	ftRegFile = 1
	ftDir     = 2
	ftChrdev  = 3
	ftBlkdev  = 4
	ftFifo    = 5
	ftSock    = 6
	ftSymlink = 7
)

// Linux file-type bits of i_mode (include/uapi/linux/stat.h).
const (
	ModeTypeMask = 0o170000 // S_IFMT
	ModeSocket   = 0o140000 // S_IFSOCK
	ModeSymlink  = 0o120000 // S_IFLNK
	ModeRegular  = 0o100000 // S_IFREG
	ModeBlock    = 0o060000 // S_IFBLK
	ModeDir      = 0o040000 // S_IFDIR
	ModeChar     = 0o020000 // S_IFCHR
	ModeFifo     = 0o010000 // S_IFIFO
	ModePermMask = 0o7777   // permission, setuid, setgid and sticky bits
)

var le = binary.LittleEndian

// SuperBlock is struct erofs_super_block, 128 bytes at byte 1024 of the image.
//
//	 0 magic            u32   EROFS_SUPER_MAGIC_V1
//	 4 checksum         u32   crc32c, only with EROFS_FEATURE_COMPAT_SB_CHKSUM
//	 8 feature_compat   u32
//	12 blkszbits        u8
//	13 sb_extslots      u8
//	14 root_nid         u16
//	16 inos             u64   number of inodes
//	24 build_time       u64   mtime of every compact inode, seconds
//	32 build_time_nsec  u32
//	36 blocks           u32   image size in blocks
//	40 meta_blkaddr     u32   first block of the metadata (nid 0)
//	44 xattr_blkaddr    u32   shared xattr area
//	48 uuid             [16]u8
//	64 volume_name      [16]u8
//	80 feature_incompat u32
//	84 u1               u16   compression algorithms / lz4 distance
//	86 extra_devices    u16
//	88 devt_slotoff     u16
//	90 dirblkbits       u8
//	91 xattr_prefix_count u8
//	92 xattr_prefix_start u32
//	96 packed_nid       u64
//	104 xattr_filter_reserved u8
//	105 reserved        [23]u8
type SuperBlock []byte

// Magic returns the magic number.
func (s SuperBlock) Magic() uint32 { return le.Uint32(s[0:]) }

// SetMagic sets the magic number.
func (s SuperBlock) SetMagic(v uint32) { le.PutUint32(s[0:], v) }

// BlkSzBits returns log2 of the block size.
func (s SuperBlock) BlkSzBits() uint8 { return s[12] }

// SetBlkSzBits sets log2 of the block size.
func (s SuperBlock) SetBlkSzBits(v uint8) { s[12] = v }

// RootNid returns the nid of the root directory.
func (s SuperBlock) RootNid() uint16 { return le.Uint16(s[14:]) }

// SetRootNid sets the nid of the root directory.
func (s SuperBlock) SetRootNid(v uint16) { le.PutUint16(s[14:], v) }

// Inos returns the number of inodes.
func (s SuperBlock) Inos() uint64 { return le.Uint64(s[16:]) }

// SetInos sets the number of inodes.
func (s SuperBlock) SetInos(v uint64) { le.PutUint64(s[16:], v) }

// BuildTime returns the build time (the mtime of compact inodes).
func (s SuperBlock) BuildTime() (sec uint64, nsec uint32) {
	return le.Uint64(s[24:]), le.Uint32(s[32:])
}

// SetBuildTime sets the build time.
func (s SuperBlock) SetBuildTime(sec uint64, nsec uint32) {
	le.PutUint64(s[24:], sec)
	le.PutUint32(s[32:], nsec)
}

// Blocks returns the image size in blocks.
func (s SuperBlock) Blocks() uint32 { return le.Uint32(s[36:]) }

// SetBlocks sets the image size in blocks.
func (s SuperBlock) SetBlocks(v uint32) { le.PutUint32(s[36:], v) }

// MetaBlkAddr returns the first block of the metadata area.
func (s SuperBlock) MetaBlkAddr() uint32 { return le.Uint32(s[40:]) }

// SetMetaBlkAddr sets the first block of the metadata area.
func (s SuperBlock) SetMetaBlkAddr(v uint32) { le.PutUint32(s[40:], v) }

// UUID returns the volume UUID.
func (s SuperBlock) UUID() []byte { return s[48:64] }

// SetUUID sets the volume UUID.
func (s SuperBlock) SetUUID(v [16]byte) { copy(s[48:64], v[:]) }

// VolumeName returns the volume name field (NUL padded).
func (s SuperBlock) VolumeName() []byte { return s[64:80] }

// SetVolumeName sets the volume name, truncated to 16 bytes.
func (s SuperBlock) SetVolumeName(v string) { copy(s[64:80], v) }

// FeatureIncompat returns the incompatible feature bits.
func (s SuperBlock) FeatureIncompat() uint32 { return le.Uint32(s[80:]) }

// DirBlkBits returns the directory block size shift beyond the block size.
func (s SuperBlock) DirBlkBits() uint8 { return s[90] }

// InodeCompact is struct erofs_inode_compact (32 bytes).
//
//	 0 i_format       u16  bit 0: version (0), bits 1-3: data layout
//	 2 i_xattr_icount u16  inline xattr size = 12 + (icount-1)*4, 0: none
//	 4 i_mode         u16
//	 6 i_nlink        u16
//	 8 i_size         u32
//	12 i_reserved     u32
//	16 i_u            u32  raw_blkaddr, or rdev (new_encode_dev) for devices
//	20 i_ino          u32  only for 32-bit stat compatibility
//	24 i_uid          u16
//	26 i_gid          u16
//	28 i_reserved2    u32
type InodeCompact []byte

// Format returns i_format.
func (c InodeCompact) Format() uint16 { return le.Uint16(c[0:]) }

// XattrICount returns i_xattr_icount.
func (c InodeCompact) XattrICount() uint16 { return le.Uint16(c[2:]) }

// Mode returns i_mode.
func (c InodeCompact) Mode() uint16 { return le.Uint16(c[4:]) }

// Nlink returns i_nlink.
func (c InodeCompact) Nlink() uint16 { return le.Uint16(c[6:]) }

// Size returns i_size.
func (c InodeCompact) Size() uint32 { return le.Uint32(c[8:]) }

// U returns i_u.
func (c InodeCompact) U() uint32 { return le.Uint32(c[16:]) }

// Ino returns i_ino.
func (c InodeCompact) Ino() uint32 { return le.Uint32(c[20:]) }

// UID returns i_uid.
func (c InodeCompact) UID() uint16 { return le.Uint16(c[24:]) }

// GID returns i_gid.
func (c InodeCompact) GID() uint16 { return le.Uint16(c[26:]) }

func (c InodeCompact) put(format, icount, mode, nlink uint16, size, u, ino uint32, uid, gid uint16) {
	le.PutUint16(c[0:], format)
	le.PutUint16(c[2:], icount)
	le.PutUint16(c[4:], mode)
	le.PutUint16(c[6:], nlink)
	le.PutUint32(c[8:], size)
	le.PutUint32(c[12:], 0)
	le.PutUint32(c[16:], u)
	le.PutUint32(c[20:], ino)
	le.PutUint16(c[24:], uid)
	le.PutUint16(c[26:], gid)
	le.PutUint32(c[28:], 0)
}

// InodeExtended is struct erofs_inode_extended (64 bytes).
//
//	 0 i_format       u16  bit 0: version (1), bits 1-3: data layout
//	 2 i_xattr_icount u16
//	 4 i_mode         u16
//	 6 i_reserved     u16
//	 8 i_size         u64
//	16 i_u            u32  raw_blkaddr, or rdev (new_encode_dev)
//	20 i_ino          u32
//	24 i_uid          u32
//	28 i_gid          u32
//	32 i_mtime        u64
//	40 i_mtime_nsec   u32
//	44 i_nlink        u32
//	48 i_reserved2    [16]u8
type InodeExtended []byte

// Format returns i_format.
func (x InodeExtended) Format() uint16 { return le.Uint16(x[0:]) }

// XattrICount returns i_xattr_icount.
func (x InodeExtended) XattrICount() uint16 { return le.Uint16(x[2:]) }

// Mode returns i_mode.
func (x InodeExtended) Mode() uint16 { return le.Uint16(x[4:]) }

// Size returns i_size.
func (x InodeExtended) Size() uint64 { return le.Uint64(x[8:]) }

// U returns i_u.
func (x InodeExtended) U() uint32 { return le.Uint32(x[16:]) }

// Ino returns i_ino.
func (x InodeExtended) Ino() uint32 { return le.Uint32(x[20:]) }

// UID returns i_uid.
func (x InodeExtended) UID() uint32 { return le.Uint32(x[24:]) }

// GID returns i_gid.
func (x InodeExtended) GID() uint32 { return le.Uint32(x[28:]) }

// Mtime returns i_mtime and i_mtime_nsec.
func (x InodeExtended) Mtime() (sec uint64, nsec uint32) {
	return le.Uint64(x[32:]), le.Uint32(x[40:])
}

// Nlink returns i_nlink.
func (x InodeExtended) Nlink() uint32 { return le.Uint32(x[44:]) }

func (x InodeExtended) put(format, icount, mode uint16, size uint64, u, ino, uid, gid uint32, mtime uint64, mtimeNsec, nlink uint32) {
	le.PutUint16(x[0:], format)
	le.PutUint16(x[2:], icount)
	le.PutUint16(x[4:], mode)
	le.PutUint16(x[6:], 0)
	le.PutUint64(x[8:], size)
	le.PutUint32(x[16:], u)
	le.PutUint32(x[20:], ino)
	le.PutUint32(x[24:], uid)
	le.PutUint32(x[28:], gid)
	le.PutUint64(x[32:], mtime)
	le.PutUint32(x[40:], mtimeNsec)
	le.PutUint32(x[44:], nlink)
	clear(x[48:64])
}

// Dirent is struct erofs_dirent (12 bytes). A directory block holds n dirents
// followed by their names, unterminated; the first dirent's nameoff is 12*n,
// a name ends where the next one starts, and the last name ends at the first
// NUL or the end of the block (or of i_size in the last block). Names are
// sorted by byte value across the whole directory, "." and ".." included.
//
//	0 nid       u64
//	8 nameoff   u16  offset of the name from the start of the block
//	10 file_type u8  EROFS_FT_*
//	11 reserved  u8
type Dirent []byte

// Nid returns the inode the entry names.
func (d Dirent) Nid() uint64 { return le.Uint64(d[0:]) }

// NameOff returns the offset of the name in the block.
func (d Dirent) NameOff() uint16 { return le.Uint16(d[8:]) }

// FileType returns the EROFS_FT_* type.
func (d Dirent) FileType() uint8 { return d[10] }

func (d Dirent) put(nid uint64, nameoff uint16, ft uint8) {
	le.PutUint64(d[0:], nid)
	le.PutUint16(d[8:], nameoff)
	d[10] = ft
	d[11] = 0
}

// XattrIbodyHeader is struct erofs_xattr_ibody_header (12 bytes), right after
// the inode core when i_xattr_icount is non-zero. Entries (XattrEntry) follow
// the shared xattr ids, each padded to 4 bytes.
//
//	0 h_name_filter   u32  bloom filter, only read with COMPAT_XATTR_FILTER
//	4 h_shared_count  u8
//	5 h_reserved      [7]u8
//	12 h_shared_xattrs [h_shared_count]u32
type XattrIbodyHeader []byte

// SharedCount returns h_shared_count.
func (h XattrIbodyHeader) SharedCount() uint8 { return h[4] }

// XattrEntry is struct erofs_xattr_entry (4 bytes) followed by the name
// (without its prefix) and the value, padded to 4 bytes.
//
//	0 e_name_len    u8
//	1 e_name_index  u8   EROFS_XATTR_INDEX_*
//	2 e_value_size  u16
//	4 e_name        [e_name_len]u8, then the value
type XattrEntry []byte

// NameLen returns e_name_len.
func (e XattrEntry) NameLen() uint8 { return e[0] }

// NameIndex returns e_name_index.
func (e XattrEntry) NameIndex() uint8 { return e[1] }

// ValueSize returns e_value_size.
func (e XattrEntry) ValueSize() uint16 { return le.Uint16(e[2:]) }

// encodeDev is the kernel's new_encode_dev (include/linux/kdev_t.h): the
// 32-bit dev_t EROFS stores in i_u for device inodes.
func encodeDev(major, minor uint32) uint32 {
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// DecodeDev is the kernel's new_decode_dev, the inverse of the encoding
// EROFS stores in i_u for device inodes.
func DecodeDev(dev uint32) (major, minor uint32) {
	return (dev & 0xfff00) >> 8, (dev & 0xff) | (dev>>12)&0xfff00
}
