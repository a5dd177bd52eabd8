// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMalformed sends requests a driver would never send: truncated or
// lying headers, unknown opcodes, stale ids and handles, lengths past the
// request. Each gets an error reply (or none), never a panic.
func TestMalformed(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(filepath.Join(w.share, "file"), make([]byte, 3<<20), 0o644)
	s, err := New(Config{Root: w.share})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := newClient(t, s)

	// Before INIT everything but INIT fails.
	c.fail(unix.EIO, opGetattr, RootID, u32(0), u32(0), u64(0))
	c.fail(unix.EINVAL, opInit, 0, u32(7)) // short init_in
	if e, p := c.do(opInit, 0, u32(8), u32(0), u32(0), u32(0)); e != 0 || le.Uint32(p) != 7 {
		t.Errorf("INIT major 8: %v %x", e, p)
	}
	c.fail(unix.EPROTO, opInit, 0, u32(6), u32(0), u32(0), u32(0))
	c.init()

	// Truncated headers.
	for n := range InHeaderSize {
		req := c.request(opGetattr, RootID)[:n]
		got := s.Serve(req, c.reply)
		switch {
		case n < 16 && got != 0:
			t.Errorf("%d-byte request answered", n)
		case n >= 16 && (got != OutHeaderSize || int32(le.Uint32(c.reply[4:])) != -int32(unix.EINVAL)):
			t.Errorf("%d-byte request: reply %d", n, got)
		}
	}
	// Header length lying in both directions.
	for _, l := range []uint32{0, 1, InHeaderSize - 1, InHeaderSize + 17, 1 << 31, ^uint32(0)} {
		req := c.request(opGetattr, RootID, u32(0), u32(0), u64(0))
		le.PutUint32(req[0:], l)
		if e, _, _ := c.raw(req); e != unix.EINVAL {
			t.Errorf("header len %d: %v", l, e)
		}
	}
	// Header shorter than the body: the extra bytes are ignored, so the
	// fixed struct is missing.
	req := c.request(opGetattr, RootID, u32(0), u32(0), u64(0))
	le.PutUint32(req[0:], InHeaderSize+4)
	if e, _, _ := c.raw(req); e != unix.EINVAL {
		t.Errorf("short body: %v", e)
	}
	// Unknown opcodes.
	for _, op := range []uint32{0, 7, 19, 31, 32, 39, 47, 48, 50, 52, opMax, 4096, ^uint32(0)} {
		c.fail(unix.ENOSYS, op, RootID, make([]byte, 64))
	}
	// Stale and unknown node ids.
	for _, id := range []uint64{0, 2, 3, 1 << 40, ^uint64(0)} {
		c.fail(unix.ENOENT, opGetattr, id, u32(0), u32(0), u64(0))
		c.fail(unix.ENOENT, opLookup, id, cstr("file"))
		c.fail(unix.ENOENT, opOpen, id, u32(0), u32(0))
	}
	f := c.lookup(RootID, "file")
	// Operations on the wrong node type.
	c.fail(unix.ENOTDIR, opLookup, f.id, cstr("x"))
	c.fail(unix.EISDIR, opOpen, RootID, u32(0), u32(0))
	c.fail(unix.EINVAL, opReadlink, f.id)
	c.fail(unix.ENOTDIR, opOpendir, f.id, u32(0), u32(0))
	// Unknown handles, and handles of the wrong kind.
	fh := c.open(f.id, unix.O_RDWR)
	dh := le.Uint64(c.must(opOpendir, RootID, u32(0), u32(0)))
	for _, h := range []uint64{0, 999, ^uint64(0)} {
		c.fail(unix.EBADF, opRead, f.id, ioBody(h, 0, 10))
		c.fail(unix.EBADF, opWrite, f.id, ioBody(h, 0, 1), []byte("x"))
		c.fail(unix.EBADF, opReaddir, RootID, ioBody(h, 0, 4096))
		c.fail(unix.EBADF, opRelease, f.id, u64(h), u32(0), u32(0), u64(0))
		c.fail(unix.EBADF, opFsync, f.id, u64(h), u32(0), u32(0))
		c.fail(unix.EBADF, opLseek, f.id, u64(h), u64(0), u32(0), u32(0))
	}
	c.fail(unix.EBADF, opRead, f.id, ioBody(dh, 0, 10))
	c.fail(unix.EBADF, opReaddir, RootID, ioBody(fh, 0, 4096))
	c.fail(unix.EBADF, opReleasedir, RootID, u64(fh), u32(0), u32(0), u64(0))
	c.fail(unix.EBADF, opRelease, RootID, u64(dh), u32(0), u32(0), u64(0))

	// WRITE whose size runs past the request, or past MaxWrite.
	c.fail(unix.EINVAL, opWrite, f.id, ioBody(fh, 0, 100), []byte("short"))
	c.fail(unix.EINVAL, opWrite, f.id, ioBody(fh, 0, ^uint32(0)), []byte("short"))
	c.fail(unix.EINVAL, opWrite, f.id, ioBody(fh, 0, MaxWrite+1), make([]byte, MaxWrite+1))
	c.fail(unix.EFBIG, opWrite, f.id, ioBody(fh, 1<<63, 1), []byte("x"))
	// READ sizes are capped to MaxRead and to the reply space.
	if got := c.read(f.id, fh, 0, ^uint32(0)); len(got) != MaxRead {
		t.Errorf("huge READ returned %d bytes", len(got))
	}
	small := make([]byte, OutHeaderSize+100)
	if n := s.Serve(c.request(opRead, f.id, ioBody(fh, 0, 1<<20)), small); n != len(small) {
		t.Errorf("READ into %d bytes returned %d", len(small), n)
	}
	if got := c.read(f.id, fh, 1<<62, 10); len(got) != 0 {
		t.Errorf("READ far past the end: %d bytes", len(got))
	}
	c.fail(unix.EINVAL, opRead, f.id, ioBody(fh, 1<<63, 10))
	// READDIR with a huge size, or a reply space too small for one entry.
	if n := s.Serve(c.request(opReaddir, RootID, ioBody(dh, 0, ^uint32(0))), small); n < OutHeaderSize {
		t.Errorf("READDIR into small reply: %d", n)
	}
	c.fail(unix.EINVAL, opReaddir, RootID, ioBody(dh, 1<<63, 4096))
	// No room for a reply at all: nothing is written.
	if n := s.Serve(c.request(opGetattr, RootID, u32(0), u32(0), u64(0)), make([]byte, OutHeaderSize-1)); n != 0 {
		t.Errorf("reply into 15 bytes: %d", n)
	}
	// A reply space too small for a fixed reply: EINVAL before acting.
	if n := s.Serve(c.request(opLookup, RootID, cstr("file")), make([]byte, OutHeaderSize+10)); n != OutHeaderSize {
		t.Errorf("LOOKUP into small reply: %d", n)
	}
	// BATCH_FORGET claiming more entries than it carries.
	if _, _, ok := c.raw(c.request(opBatchForget, 0, u32(1<<30), u32(0), u64(f.id), u64(1))); ok {
		t.Errorf("BATCH_FORGET answered")
	}
	c.fail(unix.ENOENT, opGetattr, f.id, u32(0), u32(0), u64(0))
	// FORGET of the root and unknown ids is ignored.
	c.forget(RootID, 1<<50)
	c.forget(12345, 1)
	c.must(opGetattr, RootID, u32(0), u32(0), u64(0))
	// Bad setattr times, lseek whence, fallocate modes and ranges.
	f = c.lookup(RootID, "file")
	sa := make([]byte, setattrInSize)
	le.PutUint32(sa[0:], fattrAtime)
	le.PutUint32(sa[56:], 2e9)
	c.fail(unix.EINVAL, opSetattr, f.id, sa)
	le.PutUint32(sa[0:], fattrSize)
	le.PutUint64(sa[16:], 1<<63)
	c.fail(unix.EFBIG, opSetattr, f.id, sa)
	c.fail(unix.EINVAL, opLseek, f.id, u64(fh), u64(0), u32(99), u32(0))
	c.fail(unix.EOPNOTSUPP, opFallocate, f.id, u64(fh), u64(0), u64(1), u32(0x40), u32(0))
	c.fail(unix.EINVAL, opFallocate, f.id, u64(fh), u64(0), u64(0), u32(0), u32(0))
	c.fail(unix.EINVAL, opFallocate, f.id, u64(fh), u64(1<<63), u64(1), u32(0), u32(0))
	c.fail(unix.EINVAL, opRename2, RootID, u64(RootID), u32(1<<10), u32(0), cstr("file"), cstr("x"))
	c.fail(unix.EINVAL, opSymlink, RootID, cstr("x"), cstr(""))
	c.fail(unix.EINVAL, opSymlink, RootID, cstr("x"), []byte("no nul"))
	if st, err := os.Stat(filepath.Join(w.share, "file")); err != nil || st.Size() != 3<<20 {
		t.Errorf("file changed: %v %v", st, err)
	}
	w.check(t)
}
