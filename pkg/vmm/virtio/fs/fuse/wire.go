// SPDX-License-Identifier: Apache-2.0

package fuse

import "encoding/binary"

// Protocol version the server speaks (include/uapi/linux/fuse.h). A newer
// minor from the guest is answered with this one; the kernel then uses only
// what 7.31 defines.
const (
	ProtoMajor = 7
	ProtoMinor = 31
)

// Opcodes (enum fuse_opcode in include/uapi/linux/fuse.h).
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opReadlink    = 5
	opSymlink     = 6
	opMknod       = 8
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opRename      = 12
	opLink        = 13
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFsync       = 20
	opSetxattr    = 21
	opGetxattr    = 22
	opListxattr   = 23
	opRemovexattr = 24
	opFlush       = 25
	opInit        = 26
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opFsyncdir    = 30
	opAccess      = 34
	opCreate      = 35
	opInterrupt   = 36
	opDestroy     = 38
	opBatchForget = 42
	opFallocate   = 43
	opReaddirplus = 44
	opRename2     = 45
	opLseek       = 46
	opMax         = 64 // opcodes at or above this are unknown
)

// RootID is FUSE_ROOT_ID, the node id of the share root.
const RootID = 1

// Sizes of the wire structs (fuse.h, protocol 7.31), all little-endian.
const (
	// InHeaderSize is sizeof(struct fuse_in_header): len u32, opcode u32,
	// unique u64, nodeid u64, uid u32, gid u32, pid u32, padding u32.
	InHeaderSize = 40
	// OutHeaderSize is sizeof(struct fuse_out_header): len u32, error
	// i32, unique u64.
	OutHeaderSize = 16

	attrSize        = 88  // struct fuse_attr
	entryOutSize    = 128 // struct fuse_entry_out: 40 bytes + fuse_attr
	attrOutSize     = 104 // struct fuse_attr_out: 16 bytes + fuse_attr
	openOutSize     = 16  // struct fuse_open_out
	writeOutSize    = 8   // struct fuse_write_out
	statfsOutSize   = 80  // struct fuse_statfs_out (fuse_kstatfs)
	initOutSize     = 64  // struct fuse_init_out (7.31)
	lseekOutSize    = 8   // struct fuse_lseek_out
	initInMinSize   = 16  // major, minor, max_readahead, flags
	getattrInSize   = 16  // struct fuse_getattr_in
	setattrInSize   = 88  // struct fuse_setattr_in
	mknodInSize     = 16  // struct fuse_mknod_in
	mkdirInSize     = 8   // struct fuse_mkdir_in
	renameInSize    = 8   // struct fuse_rename_in
	rename2InSize   = 16  // struct fuse_rename2_in
	linkInSize      = 8   // struct fuse_link_in
	openInSize      = 8   // struct fuse_open_in
	createInSize    = 16  // struct fuse_create_in
	readInSize      = 40  // struct fuse_read_in
	writeInSize     = 40  // struct fuse_write_in
	releaseInSize   = 24  // struct fuse_release_in
	fsyncInSize     = 16  // struct fuse_fsync_in
	forgetInSize    = 8   // struct fuse_forget_in
	batchForgetSize = 8   // struct fuse_batch_forget_in
	forgetOneSize   = 16  // struct fuse_forget_one
	accessInSize    = 8   // struct fuse_access_in
	fallocateInSize = 32  // struct fuse_fallocate_in
	lseekInSize     = 24  // struct fuse_lseek_in
	direntSize      = 24  // struct fuse_dirent without the name
)

// Limits the server advertises in FUSE_INIT and enforces on every request.
const (
	// MaxWrite is max_write: the largest WRITE payload accepted.
	MaxWrite = 1 << 20
	// MaxRead is the largest READ, READDIR or READLINK reply payload.
	MaxRead = 1 << 20
	// MaxRequestSize is the largest request the server parses: a WRITE
	// header with a MaxWrite payload. Transports need not copy more.
	MaxRequestSize = InHeaderSize + writeInSize + MaxWrite
	// MaxReplySize is the largest reply Serve writes.
	MaxReplySize = OutHeaderSize + MaxRead
	// maxPages is max_pages for FUSE_MAX_PAGES: MaxWrite in 4 KiB pages.
	maxPages = MaxWrite / 4096
	// maxNameLen is NAME_MAX: the longest single path component.
	maxNameLen = 255
	// maxSymlinkLen is the longest symlink target accepted (PATH_MAX less
	// the NUL).
	maxSymlinkLen = 4095
)

// FUSE_INIT flags (fuse.h). The server offers initFlags; the reply carries
// their intersection with what the guest asked for.
const (
	initAsyncRead       = 1 << 0
	initAtomicOTrunc    = 1 << 3
	initBigWrites       = 1 << 5
	initAutoInvalData   = 1 << 12
	initDoReaddirplus   = 1 << 13
	initReaddirplusAuto = 1 << 14
	initParallelDirops  = 1 << 18
	initMaxPages        = 1 << 22

	// initFlags deliberately leaves out FUSE_EXPORT_SUPPORT (it makes the
	// guest look up ".."), POSIX/flock locks (kept in the guest),
	// WRITEBACK_CACHE and POSIX_ACL.
	initFlags = initAsyncRead | initAtomicOTrunc | initBigWrites | initAutoInvalData |
		initDoReaddirplus | initReaddirplusAuto | initParallelDirops | initMaxPages
)

// SETATTR valid bits (FATTR_* in fuse.h).
const (
	fattrMode     = 1 << 0
	fattrUID      = 1 << 1
	fattrGID      = 1 << 2
	fattrSize     = 1 << 3
	fattrAtime    = 1 << 4
	fattrMtime    = 1 << 5
	fattrFh       = 1 << 6
	fattrAtimeNow = 1 << 7
	fattrMtimeNow = 1 << 8
)

// Other protocol bits.
const (
	getattrFh       = 1 << 0 // FUSE_GETATTR_FH
	fsyncDataSync   = 1 << 0 // FUSE_FSYNC_FDATASYNC
	renameNoReplace = 1 << 0 // RENAME_NOREPLACE
	renameExchange  = 1 << 1 // RENAME_EXCHANGE
)

// le is the byte order of every FUSE struct on virtio-fs (the guest is
// x86-64 or arm64).
var le = binary.LittleEndian

// inHeader is a decoded struct fuse_in_header.
type inHeader struct {
	len    uint32
	opcode uint32
	unique uint64
	nodeID uint64
	uid    uint32
	gid    uint32
	pid    uint32
}

// parseInHeader decodes the header at the start of b, which must hold at
// least InHeaderSize bytes.
func parseInHeader(b []byte) inHeader {
	return inHeader{
		len:    le.Uint32(b[0:]),
		opcode: le.Uint32(b[4:]),
		unique: le.Uint64(b[8:]),
		nodeID: le.Uint64(b[16:]),
		uid:    le.Uint32(b[24:]),
		gid:    le.Uint32(b[28:]),
		pid:    le.Uint32(b[32:]),
	}
}

// putOutHeader writes struct fuse_out_header. errno is positive; the wire
// carries its negation.
func putOutHeader(b []byte, length uint32, errno int32, unique uint64) {
	le.PutUint32(b[0:], length)
	le.PutUint32(b[4:], uint32(-errno))
	le.PutUint64(b[8:], unique)
}

// attr is struct fuse_attr.
type attr struct {
	ino, size, blocks     uint64
	atime, mtime, ctime   uint64
	atimens, mtimens      uint32
	ctimens               uint32
	mode, nlink, uid, gid uint32
	rdev, blksize         uint32
}

func (a *attr) put(b []byte) {
	le.PutUint64(b[0:], a.ino)
	le.PutUint64(b[8:], a.size)
	le.PutUint64(b[16:], a.blocks)
	le.PutUint64(b[24:], a.atime)
	le.PutUint64(b[32:], a.mtime)
	le.PutUint64(b[40:], a.ctime)
	le.PutUint32(b[48:], a.atimens)
	le.PutUint32(b[52:], a.mtimens)
	le.PutUint32(b[56:], a.ctimens)
	le.PutUint32(b[60:], a.mode)
	le.PutUint32(b[64:], a.nlink)
	le.PutUint32(b[68:], a.uid)
	le.PutUint32(b[72:], a.gid)
	le.PutUint32(b[76:], a.rdev)
	le.PutUint32(b[80:], a.blksize)
	le.PutUint32(b[84:], 0) // flags
}

// putEntryOut writes struct fuse_entry_out: nodeid, generation,
// entry_valid, attr_valid, their nanoseconds, then the attributes.
func putEntryOut(b []byte, nodeID uint64, valid validity, a *attr) {
	le.PutUint64(b[0:], nodeID)
	le.PutUint64(b[8:], 0) // generation: node ids are never reused
	le.PutUint64(b[16:], valid.sec)
	le.PutUint64(b[24:], valid.sec)
	le.PutUint32(b[32:], valid.nsec)
	le.PutUint32(b[36:], valid.nsec)
	a.put(b[40:])
}

// putAttrOut writes struct fuse_attr_out.
func putAttrOut(b []byte, valid validity, a *attr) {
	le.PutUint64(b[0:], valid.sec)
	le.PutUint32(b[8:], valid.nsec)
	le.PutUint32(b[12:], 0)
	a.put(b[16:])
}

// validity is a cache timeout as the protocol splits it.
type validity struct {
	sec  uint64
	nsec uint32
}

// direntLen returns the size of a struct fuse_dirent carrying a name of n
// bytes, padded to 8 bytes as FUSE_DIRENT_ALIGN does.
func direntLen(n int) int { return (direntSize + n + 7) &^ 7 }

// putDirent writes a struct fuse_dirent and its padded name into b, which
// holds direntLen(len(name)) bytes.
func putDirent(b []byte, ino, off uint64, typ uint32, name []byte) {
	le.PutUint64(b[0:], ino)
	le.PutUint64(b[8:], off)
	le.PutUint32(b[16:], uint32(len(name)))
	le.PutUint32(b[20:], typ)
	n := copy(b[direntSize:], name)
	clear(b[direntSize+n : direntLen(len(name))])
}

// body is a cursor over a request's bytes after the header. Every read is
// bounds-checked; a short body is reported by ok, never by a panic.
type body struct {
	b  []byte
	ok bool
}

func newBody(b []byte) body { return body{b: b, ok: true} }

// fixed returns the next n bytes (a fixed-size in-struct).
func (r *body) fixed(n int) []byte {
	if !r.ok || len(r.b) < n {
		r.ok = false
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

// cstring returns the next NUL-terminated string without its NUL.
func (r *body) cstring() []byte {
	if !r.ok {
		return nil
	}
	for i, c := range r.b {
		if c == 0 {
			s := r.b[:i]
			r.b = r.b[i+1:]
			return s
		}
	}
	r.ok = false
	return nil
}

// validName reports whether a guest-supplied name is one path component
// the host may create or look up: 1 to 255 bytes, not "." or "..", no '/'
// and no NUL (cstring already split at the first NUL).
func validName(n []byte) bool {
	if len(n) == 0 || len(n) > maxNameLen {
		return false
	}
	if n[0] == '.' && (len(n) == 1 || (len(n) == 2 && n[1] == '.')) {
		return false
	}
	for _, c := range n {
		if c == '/' || c == 0 {
			return false
		}
	}
	return true
}
