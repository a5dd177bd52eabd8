// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzServe feeds a sequence of arbitrary requests, through Serve or (odd
// replySpace) ServeScattered, to a server whose guest
// already holds a file (node 2, handle 1), a directory (node 3, handle 2)
// and a symlink pointing outside (node 4). The input is split into
// requests by their header lengths. The server must never panic, never
// reply beyond the reply space, and never touch anything outside the
// share.
func FuzzServe(f *testing.F) {
	c := newClient(f, nil)
	seed := func(reqs ...[]byte) []byte { return cat(reqs...) }
	f.Add(seed(c.request(opLookup, RootID, cstr("file"))), uint16(4096))
	f.Add(seed(c.request(opLookup, RootID, cstr("..")), c.request(opLookup, 4, cstr("sentinel"))), uint16(4096))
	f.Add(seed(c.request(opCreate, RootID, createBody(unix.O_RDWR, 0o644, "new")...),
		c.request(opWrite, 5, ioBody(3, 0, 5), []byte("hello")),
		c.request(opRead, 5, ioBody(3, 0, 5))), uint16(200))
	f.Add(seed(c.request(opReaddirplus, 3, ioBody(2, 0, 4096)), c.request(opReaddir, RootID, ioBody(2, 0, 100))), uint16(0xffff))
	f.Add(seed(c.request(opRename, RootID, u64(3), cstr("file"), cstr("moved")),
		c.request(opLink, 3, u64(2), cstr("hard")),
		c.request(opSymlink, 3, cstr("l"), cstr("/etc/passwd")),
		c.request(opUnlink, 3, cstr("moved"))), uint16(300))
	f.Add(seed(c.request(opSetattr, 2, make([]byte, setattrInSize)),
		c.request(opBatchForget, 0, u32(2), u32(0), u64(2), u64(1), u64(3), u64(1)),
		c.request(opGetattr, 2, u32(0), u32(0), u64(0))), uint16(50))
	f.Add(seed(c.request(opMknod, RootID, u32(unix.S_IFCHR|0o666), u32(0x101), u32(0), u32(0), cstr("mem")),
		c.request(opOpen, 4, u32(unix.O_RDWR), u32(0))), uint16(4096))
	f.Add([]byte{40, 0, 0, 0, 1, 0, 0, 0}, uint16(16))

	w := newWorld(f)
	f.Fuzz(func(t *testing.T, input []byte, replySpace uint16) {
		os.RemoveAll(w.share)
		os.Mkdir(w.share, 0o755)
		os.WriteFile(filepath.Join(w.share, "file"), []byte("file data"), 0o644)
		os.Mkdir(filepath.Join(w.share, "dir"), 0o755)
		os.Symlink("../outside", filepath.Join(w.share, "link"))
		s, err := New(Config{Root: w.share, MaxNodes: 64, MaxHandles: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		c := newClient(t, s)
		c.init()
		c.open(c.lookup(RootID, "file").id, unix.O_RDWR)
		c.must(opOpendir, c.lookup(RootID, "dir").id, u32(0), u32(0))
		c.lookup(RootID, "link")

		reply := make([]byte, replySpace)
		scratch := make([]byte, MaxReplySize)
		for len(input) > 0 {
			req := input
			if len(input) >= InHeaderSize {
				if l := le.Uint32(input[0:]); l >= InHeaderSize && uint64(l) <= uint64(len(input)) {
					req = input[:l]
				}
			}
			input = input[len(req):]
			var n int
			if replySpace%2 == 0 {
				n = s.Serve(req, reply)
			} else {
				// Scattered: head copied, the rest in 5-byte pieces,
				// the reply space in pieces of reply.
				head := bytes.Clone(req[:min(len(req), HeadSize)])
				var tail [][]byte
				for rest := req[len(head):]; len(rest) > 0; rest = rest[min(len(rest), 5):] {
					tail = append(tail, rest[:min(len(rest), 5)])
				}
				cut := min(len(reply), 7)
				n = s.ServeScattered(head, tail, [][]byte{reply[:cut], nil, reply[cut:]}, scratch)
			}
			if n < 0 || n > len(reply) {
				t.Fatalf("reply of %d bytes into %d", n, len(reply))
			}
			if n > 0 && int(le.Uint32(reply)) != n {
				t.Fatalf("reply header says %d, length %d", le.Uint32(reply), n)
			}
		}
		w.check(t)
	})
}
