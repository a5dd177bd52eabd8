// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for zero Config fields.
const (
	// DefaultMaxNodes bounds the node table (inodes the guest holds).
	DefaultMaxNodes = 1 << 16
	// DefaultMaxHandles bounds the open file and directory handles.
	DefaultMaxHandles = 1 << 16
	// DefaultCacheTimeout is how long the guest may cache entries and
	// attributes.
	DefaultCacheTimeout = time.Second
)

// Config configures a Server.
type Config struct {
	// Root is the host directory to share. It must exist and be a
	// directory; symlinks in Root itself are resolved once by New, never
	// afterwards.
	Root string
	// ReadOnly refuses every request that would change the share with
	// EROFS, and OPEN or CREATE asking for write access. False means
	// read-write.
	ReadOnly bool
	// GuestOwnership makes files, directories, nodes and symlinks the
	// guest creates belong to the uid and gid of its request, when the
	// host process runs as root (it cannot chown otherwise). False means
	// they belong to the host process user, as do any created when the
	// host process is not root.
	GuestOwnership bool
	// AllowSetuid keeps the set-user-ID and set-group-ID bits in modes
	// the guest sets. False drops set-user-ID everywhere and
	// set-group-ID except on directories, so the guest cannot leave a
	// setuid executable on the host.
	AllowSetuid bool
	// MaxNodes bounds the inodes the guest may hold at once; LOOKUP and
	// the creating requests fail with ENFILE beyond it. Zero means
	// DefaultMaxNodes.
	MaxNodes int
	// MaxHandles bounds the open file and directory handles; OPEN,
	// CREATE and OPENDIR fail with ENFILE beyond it. Zero means
	// DefaultMaxHandles. Each node and handle holds one host fd, so the
	// process's RLIMIT_NOFILE should exceed MaxNodes+MaxHandles.
	MaxHandles int
	// CacheTimeout is how long the guest may cache names and attributes
	// before asking again. Zero means DefaultCacheTimeout; a negative
	// value disables caching (the host may change the share under the
	// guest).
	CacheTimeout time.Duration
	// QuotaBytes bounds the total size of the share's regular files, as
	// counted at New (a walk of the share) and changed through this
	// server: a WRITE, FALLOCATE or SETATTR that would grow it past the
	// quota fails with ENOSPC, and FALLOCATE with KEEP_SIZE (blocks past
	// the size) is refused. Directories, symlinks and inode counts are
	// not charged, and changes made on the host meanwhile are not seen.
	// Zero means no quota.
	QuotaBytes uint64
}

// Server answers FUSE requests from a hostile client against one host
// directory. It is transport-free: Serve takes a request's bytes and fills
// a reply. It is safe for concurrent use; requests are served one at a
// time.
type Server struct {
	cfg      Config
	valid    validity
	asRoot   bool // the host process can chown
	procFD   int  // O_PATH fd of /proc/self/fd, for reopening nodes by fd
	m        Metrics
	opsTable *[opMax]op

	mu          sync.Mutex
	closed      bool
	initialized bool
	nodes       nodeTable
	handles     handleTable
	quotaUsed   uint64 // bytes of regular files counted against QuotaBytes
	dirBuf      []byte // getdents scratch
}

// New opens cfg.Root and returns a Server for it. The server starts no
// goroutines; Close releases every host fd it holds.
func New(cfg Config) (*Server, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("%w: no root", ErrConfig)
	}
	if cfg.MaxNodes < 0 || cfg.MaxHandles < 0 {
		return nil, fmt.Errorf("%w: negative limit", ErrConfig)
	}
	if cfg.MaxNodes == 0 {
		cfg.MaxNodes = DefaultMaxNodes
	}
	if cfg.MaxHandles == 0 {
		cfg.MaxHandles = DefaultMaxHandles
	}
	switch {
	case cfg.CacheTimeout == 0:
		cfg.CacheTimeout = DefaultCacheTimeout
	case cfg.CacheTimeout < 0:
		cfg.CacheTimeout = 0
	}
	rootFD, err := unix.Open(cfg.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fuse: open root %s: %w", cfg.Root, err)
	}
	var st unix.Stat_t
	if err := fstat(rootFD, &st); err != nil {
		unix.Close(rootFD)
		return nil, fmt.Errorf("fuse: stat root %s: %w", cfg.Root, err)
	}
	procFD, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(rootFD)
		return nil, fmt.Errorf("fuse: open /proc/self/fd: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		valid:    validity{sec: uint64(cfg.CacheTimeout / time.Second), nsec: uint32(cfg.CacheTimeout % time.Second)},
		asRoot:   os.Geteuid() == 0,
		procFD:   procFD,
		opsTable: &opsTable,
		dirBuf:   make([]byte, dirBufSize),
	}
	s.nodes.init(rootFD, &st, cfg.MaxNodes)
	s.handles.init(cfg.MaxHandles)
	if cfg.QuotaBytes > 0 {
		used, err := usage(rootFD)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("fuse: size of %s for quota: %w", cfg.Root, err)
		}
		s.quotaUsed = used
	}
	return s, nil
}

// Metrics returns the server's counters.
func (s *Server) Metrics() *Metrics { return &s.m }

// Reset forgets every node but the root and closes every handle, as when
// the guest unmounts or the device is reset. The next request must be
// FUSE_INIT.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Server) resetLocked() {
	s.initialized = false
	s.nodes.dropAll()
	s.handles.closeAll()
}

// Close releases every host fd the server holds. It is idempotent; Serve
// after Close answers EIO.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.resetLocked()
	err := s.nodes.closeRoot()
	if e := unix.Close(s.procFD); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("fuse: close: %w", err)
	}
	return nil
}

// request is one request being served.
type request struct {
	hdr    inHeader
	in     body     // bytes after the header, up to hdr.len
	tail   [][]byte // WRITE payload past in, in place (ServeScattered)
	out    []byte   // reply payload space, after the out header
	vec    [][]byte // READ payload space in place, after the out header (ServeScattered)
	vecLen int      // total length of vec
	node   *node    // the header's node, when the op names one
}

// op describes how an opcode is served.
type op struct {
	name    string
	in      int  // fixed in-struct size the body must hold
	out     int  // reply payload space needed before anything is done
	mutates bool // refused with EROFS on a read-only share
	noReply bool // FORGET, BATCH_FORGET, INTERRUPT: the client expects no reply
	noNode  bool // the header's nodeid is not looked up
	fn      func(s *Server, r *request) (int, unix.Errno)
}

// Serve handles the request in req and writes the reply into reply,
// returning its length: 0 when there is no reply (FORGET, or a request too
// short to carry a unique id, or reply shorter than OutHeaderSize).
//
// Every byte of req is distrusted: lengths are checked against req, names
// against validName, node ids and handles against the server's tables.
// Payload-carrying replies (READ, READDIR) are capped to len(reply). req
// and reply may be reused once Serve returns; the server keeps neither.
func (s *Server) Serve(req, reply []byte) int {
	s.m.Requests.Add(1)
	if len(req) < InHeaderSize {
		s.m.BadRequests.Add(1)
		if len(req) < 16 || len(reply) < OutHeaderSize {
			return 0
		}
		// The unique id is there: answer it so the client does not wait.
		return errorReply(reply, le.Uint64(req[8:]), unix.EINVAL)
	}
	hdr := parseInHeader(req)
	if len(reply) < OutHeaderSize {
		reply = nil
	}
	if hdr.len < InHeaderSize || uint64(hdr.len) > uint64(len(req)) {
		s.m.BadRequests.Add(1)
		if reply == nil {
			return 0
		}
		return errorReply(reply, hdr.unique, unix.EINVAL)
	}
	r := &request{hdr: hdr, in: newBody(req[InHeaderSize:hdr.len])}
	if reply != nil {
		r.out = reply[OutHeaderSize:]
	}
	n, errno, noReply := s.serve(r)
	if noReply || reply == nil {
		return 0
	}
	if errno != 0 {
		s.m.Errors.Add(1)
		return errorReply(reply, hdr.unique, errno)
	}
	putOutHeader(reply, uint32(OutHeaderSize+n), 0, hdr.unique)
	return OutHeaderSize + n
}

func errorReply(reply []byte, unique uint64, errno unix.Errno) int {
	putOutHeader(reply, OutHeaderSize, int32(errno), unique)
	return OutHeaderSize
}

// serve checks r against the op table and the server's state and runs its
// handler. r.out is nil when there is no room for a reply.
func (s *Server) serve(r *request) (int, unix.Errno, bool) {
	hdr := r.hdr
	if hdr.opcode >= opMax || s.opsTable[hdr.opcode].fn == nil {
		s.m.Unsupported.Add(1)
		return 0, unix.ENOSYS, false
	}
	o := &s.opsTable[hdr.opcode]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, unix.EIO, o.noReply
	}
	if !s.initialized && hdr.opcode != opInit {
		s.m.BadRequests.Add(1)
		return 0, unix.EIO, o.noReply
	}
	if !o.noReply && len(r.out) < o.out {
		s.m.BadRequests.Add(1)
		return 0, unix.EINVAL, false
	}
	if len(r.in.b) < o.in {
		s.m.BadRequests.Add(1)
		return 0, unix.EINVAL, o.noReply
	}
	if o.mutates && s.cfg.ReadOnly {
		s.m.ReadOnlyRejects.Add(1)
		return 0, unix.EROFS, o.noReply
	}
	if !o.noNode {
		if r.node = s.nodes.get(hdr.nodeID); r.node == nil {
			s.m.BadRequests.Add(1)
			return 0, unix.ENOENT, o.noReply
		}
	}
	n, errno := o.fn(s, r)
	return n, errno, o.noReply
}

// opsTable maps opcodes to their handlers; a zero entry is ENOSYS.
var opsTable = [opMax]op{
	opInit:        {name: "INIT", in: initInMinSize, out: initOutSize, noNode: true, fn: (*Server).init},
	opDestroy:     {name: "DESTROY", noNode: true, fn: (*Server).destroy},
	opLookup:      {name: "LOOKUP", out: entryOutSize, fn: (*Server).lookup},
	opForget:      {name: "FORGET", in: forgetInSize, noReply: true, noNode: true, fn: (*Server).forget},
	opBatchForget: {name: "BATCH_FORGET", in: batchForgetSize, noReply: true, noNode: true, fn: (*Server).batchForget},
	opInterrupt:   {name: "INTERRUPT", noReply: true, noNode: true, fn: func(*Server, *request) (int, unix.Errno) { return 0, 0 }},
	opGetattr:     {name: "GETATTR", in: getattrInSize, out: attrOutSize, fn: (*Server).getattr},
	opSetattr:     {name: "SETATTR", in: setattrInSize, out: attrOutSize, mutates: true, fn: (*Server).setattr},
	opReadlink:    {name: "READLINK", fn: (*Server).readlink},
	opSymlink:     {name: "SYMLINK", out: entryOutSize, mutates: true, fn: (*Server).symlink},
	opMknod:       {name: "MKNOD", in: mknodInSize, out: entryOutSize, mutates: true, fn: (*Server).mknod},
	opMkdir:       {name: "MKDIR", in: mkdirInSize, out: entryOutSize, mutates: true, fn: (*Server).mkdir},
	opUnlink:      {name: "UNLINK", mutates: true, fn: (*Server).unlink},
	opRmdir:       {name: "RMDIR", mutates: true, fn: (*Server).rmdir},
	opRename:      {name: "RENAME", in: renameInSize, mutates: true, fn: (*Server).rename},
	opRename2:     {name: "RENAME2", in: rename2InSize, mutates: true, fn: (*Server).rename},
	opLink:        {name: "LINK", in: linkInSize, out: entryOutSize, mutates: true, fn: (*Server).link},
	opOpen:        {name: "OPEN", in: openInSize, out: openOutSize, fn: (*Server).open},
	opCreate:      {name: "CREATE", in: createInSize, out: entryOutSize + openOutSize, mutates: true, fn: (*Server).create},
	opRead:        {name: "READ", in: readInSize, fn: (*Server).read},
	opWrite:       {name: "WRITE", in: writeInSize, out: writeOutSize, mutates: true, fn: (*Server).write},
	opStatfs:      {name: "STATFS", out: statfsOutSize, fn: (*Server).statfs},
	opRelease:     {name: "RELEASE", in: releaseInSize, noNode: true, fn: (*Server).release},
	opReleasedir:  {name: "RELEASEDIR", in: releaseInSize, noNode: true, fn: (*Server).release},
	opFsync:       {name: "FSYNC", in: fsyncInSize, noNode: true, fn: (*Server).fsync},
	opFsyncdir:    {name: "FSYNCDIR", in: fsyncInSize, noNode: true, fn: (*Server).fsync},
	// FLUSH (close(2) in the guest) has nothing to do here: writes are
	// not buffered on the host and locks stay in the guest. ENOSYS makes
	// the guest stop sending it (it still writes its dirty pages back
	// before a close returns), saving a round trip per close.
	opFlush:       {name: "FLUSH", noNode: true, fn: enosys},
	opOpendir:     {name: "OPENDIR", in: openInSize, out: openOutSize, fn: (*Server).opendir},
	opReaddir:     {name: "READDIR", in: readInSize, noNode: true, fn: (*Server).readdir},
	opReaddirplus: {name: "READDIRPLUS", in: readInSize, noNode: true, fn: (*Server).readdirplus},
	opAccess:      {name: "ACCESS", in: accessInSize, fn: (*Server).access},
	opFallocate:   {name: "FALLOCATE", in: fallocateInSize, mutates: true, noNode: true, fn: (*Server).fallocate},
	opLseek:       {name: "LSEEK", in: lseekInSize, out: lseekOutSize, noNode: true, fn: (*Server).lseek},
	// Extended attributes are not offered: ENOSYS makes the guest stop
	// asking (and return EOPNOTSUPP to its callers). Mutating ones answer
	// EROFS first on a read-only share.
	opGetxattr:    {name: "GETXATTR", fn: enosys},
	opListxattr:   {name: "LISTXATTR", fn: enosys},
	opSetxattr:    {name: "SETXATTR", mutates: true, fn: enosys},
	opRemovexattr: {name: "REMOVEXATTR", mutates: true, fn: enosys},
}

func enosys(*Server, *request) (int, unix.Errno) { return 0, unix.ENOSYS }

// init answers FUSE_INIT. A second INIT starts a new session: every node
// but the root and every handle is dropped first.
func (s *Server) init(r *request) (int, unix.Errno) {
	in := r.in.fixed(initInMinSize)
	major, minor := le.Uint32(in[0:]), le.Uint32(in[4:])
	readahead, flags := le.Uint32(in[8:]), le.Uint32(in[12:])
	if s.initialized {
		s.resetLocked()
	}
	out := r.out[:initOutSize]
	clear(out)
	le.PutUint32(out[0:], ProtoMajor)
	if major > ProtoMajor {
		// The client retries with our major (fuse_dev_do_write's
		// process_init_reply: a lone major asks for a downgrade).
		le.PutUint32(out[4:], ProtoMinor)
		return initOutSize, 0
	}
	if major < ProtoMajor {
		return 0, unix.EPROTO
	}
	le.PutUint32(out[4:], min(minor, ProtoMinor))
	le.PutUint32(out[8:], readahead)
	le.PutUint32(out[12:], flags&initFlags)
	le.PutUint16(out[16:], 64) // max_background
	le.PutUint16(out[18:], 48) // congestion_threshold
	le.PutUint32(out[20:], MaxWrite)
	le.PutUint32(out[24:], 1) // time_gran: nanoseconds
	le.PutUint16(out[28:], maxPages)
	s.initialized = true
	return initOutSize, 0
}

// destroy answers FUSE_DESTROY: the session ends.
func (s *Server) destroy(r *request) (int, unix.Errno) {
	s.resetLocked()
	return 0, 0
}

// errno converts a host error into the errno the guest sees. Errors that
// are not errnos become EIO.
func errno(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}
