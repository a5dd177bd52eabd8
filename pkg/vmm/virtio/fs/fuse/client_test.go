// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// client is a FUSE client over a Server, building requests byte by byte as
// a guest would (or would not: every field can be chosen).
type client struct {
	tb     testing.TB
	s      *Server
	unique uint64
	uid    uint32
	gid    uint32
	reply  []byte
	// scratch is ServeScattered's scratch buffer. Requests with an even
	// unique id go through ServeScattered, the others through Serve, so
	// every test exercises both.
	scratch []byte
}

func newClient(tb testing.TB, s *Server) *client {
	return &client{tb: tb, s: s, reply: make([]byte, MaxReplySize), scratch: make([]byte, MaxReplySize)}
}

// serve passes req to the server, scattered when its unique id is even:
// the head copied, the rest in 1000-byte pieces, and the reply space in
// pieces of c.reply so the reply lands contiguous.
func (c *client) serve(req []byte) int {
	if len(req) < 16 || le.Uint64(req[8:])%2 == 1 {
		return c.s.Serve(req, c.reply)
	}
	head := bytes.Clone(req[:min(len(req), HeadSize)])
	var tail [][]byte
	for rest := req[len(head):]; len(rest) > 0; {
		k := min(len(rest), 1000)
		tail = append(tail, rest[:k])
		rest = rest[k:]
	}
	reply := [][]byte{c.reply[:16], c.reply[16:16], c.reply[16:21], c.reply[21:4096], c.reply[4096:]}
	return c.s.ServeScattered(head, tail, reply, c.scratch)
}

func u32(v uint32) []byte { return le.AppendUint32(nil, v) }
func u64(v uint64) []byte { return le.AppendUint64(nil, v) }
func cstr(s string) []byte {
	return append([]byte(s), 0)
}
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// request builds a request with a correct header.
func (c *client) request(op uint32, node uint64, body ...[]byte) []byte {
	c.unique++
	b := cat(body...)
	h := make([]byte, InHeaderSize)
	le.PutUint32(h[0:], uint32(InHeaderSize+len(b)))
	le.PutUint32(h[4:], op)
	le.PutUint64(h[8:], c.unique)
	le.PutUint64(h[16:], node)
	le.PutUint32(h[24:], c.uid)
	le.PutUint32(h[28:], c.gid)
	return append(h, b...)
}

// raw serves req and returns the errno and payload of the reply, checking
// the reply header is consistent. ok is false when there was no reply.
func (c *client) raw(req []byte) (errno unix.Errno, payload []byte, ok bool) {
	c.tb.Helper()
	n := c.serve(req)
	if n == 0 {
		return 0, nil, false
	}
	if n < OutHeaderSize || n > len(c.reply) {
		c.tb.Fatalf("reply length %d", n)
	}
	if got := le.Uint32(c.reply[0:]); int(got) != n {
		c.tb.Fatalf("reply header len %d, returned %d", got, n)
	}
	e := -int32(le.Uint32(c.reply[4:]))
	if e != 0 && n != OutHeaderSize {
		c.tb.Fatalf("error reply %d carries %d bytes", e, n)
	}
	return unix.Errno(e), c.reply[OutHeaderSize:n], true
}

// do serves a well-formed request and returns errno and payload.
func (c *client) do(op uint32, node uint64, body ...[]byte) (unix.Errno, []byte) {
	c.tb.Helper()
	req := c.request(op, node, body...)
	e, p, ok := c.raw(req)
	if !ok {
		c.tb.Fatalf("op %d: no reply", op)
	}
	if le.Uint64(c.reply[8:]) != c.unique {
		c.tb.Fatalf("op %d: reply unique %d, want %d", op, le.Uint64(c.reply[8:]), c.unique)
	}
	return e, p
}

// must fails the test unless the request succeeds.
func (c *client) must(op uint32, node uint64, body ...[]byte) []byte {
	c.tb.Helper()
	e, p := c.do(op, node, body...)
	if e != 0 {
		c.tb.Fatalf("op %d node %d: %v", op, node, e)
	}
	return p
}

// fail fails the test unless the request fails with want.
func (c *client) fail(want unix.Errno, op uint32, node uint64, body ...[]byte) {
	c.tb.Helper()
	e, _ := c.do(op, node, body...)
	if e != want {
		c.tb.Fatalf("op %d node %d: errno %v, want %v", op, node, e, want)
	}
}

func (c *client) init() {
	c.tb.Helper()
	p := c.must(opInit, 0, u32(7), u32(41), u32(1<<20), u32(0xffffffff))
	if len(p) != initOutSize || le.Uint32(p[0:]) != 7 || le.Uint32(p[4:]) != ProtoMinor {
		c.tb.Fatalf("init reply %x", p)
	}
}

// entry decodes a fuse_entry_out.
type entry struct {
	id   uint64
	ino  uint64
	size uint64
	mode uint32
	uid  uint32
	gid  uint32
}

func decodeEntry(p []byte) entry {
	return entry{id: le.Uint64(p[0:]), ino: le.Uint64(p[40:]), size: le.Uint64(p[48:]),
		mode: le.Uint32(p[40+60:]), uid: le.Uint32(p[40+68:]), gid: le.Uint32(p[40+72:])}
}

func (c *client) lookup(parent uint64, name string) entry {
	c.tb.Helper()
	return decodeEntry(c.must(opLookup, parent, cstr(name)))
}

func (c *client) mkdir(parent uint64, name string, mode uint32) entry {
	c.tb.Helper()
	return decodeEntry(c.must(opMkdir, parent, u32(mode), u32(0), cstr(name)))
}

func createBody(flags, mode uint32, name string) [][]byte {
	return [][]byte{u32(flags), u32(mode), u32(0), u32(0), cstr(name)}
}

// create returns the new file's entry and handle.
func (c *client) create(parent uint64, name string, flags, mode uint32) (entry, uint64) {
	c.tb.Helper()
	p := c.must(opCreate, parent, createBody(flags, mode, name)...)
	if len(p) != entryOutSize+openOutSize {
		c.tb.Fatalf("create reply %d bytes", len(p))
	}
	return decodeEntry(p), le.Uint64(p[entryOutSize:])
}

func (c *client) open(node uint64, flags uint32) uint64 {
	c.tb.Helper()
	return le.Uint64(c.must(opOpen, node, u32(flags), u32(0)))
}

func ioBody(fh, off uint64, size uint32) []byte {
	return cat(u64(fh), u64(off), u32(size), u32(0), u64(0), u32(0), u32(0))
}

func (c *client) write(node, fh, off uint64, data []byte) uint32 {
	c.tb.Helper()
	p := c.must(opWrite, node, ioBody(fh, off, uint32(len(data))), data)
	return le.Uint32(p)
}

func (c *client) read(node, fh, off uint64, size uint32) []byte {
	c.tb.Helper()
	return bytes.Clone(c.must(opRead, node, ioBody(fh, off, size)))
}

func (c *client) release(op uint32, node, fh uint64) {
	c.tb.Helper()
	c.must(op, node, u64(fh), u32(0), u32(0), u64(0))
}

// forget drops n references to node id; FORGET has no reply.
func (c *client) forget(id, n uint64) {
	c.tb.Helper()
	if _, _, ok := c.raw(c.request(opForget, id, u64(n))); ok {
		c.tb.Fatalf("FORGET answered")
	}
}

func (c *client) getattr(node uint64) entry {
	c.tb.Helper()
	p := c.must(opGetattr, node, u32(0), u32(0), u64(0))
	// fuse_attr_out has 16 bytes before the attributes, fuse_entry_out 40.
	return decodeEntry(append(make([]byte, 24), p...))
}

// readdir returns the names in directory node, through READDIR or
// READDIRPLUS in requests of size bytes.
func (c *client) readdir(node uint64, plus bool, size uint32) []string {
	c.tb.Helper()
	fh := le.Uint64(c.must(opOpendir, node, u32(0), u32(0)))
	defer c.release(opReleasedir, node, fh)
	op := uint32(opReaddir)
	if plus {
		op = opReaddirplus
	}
	var names []string
	var off uint64
	for {
		p := c.must(op, node, ioBody(fh, off, size))
		if len(p) == 0 {
			break
		}
		for len(p) > 0 {
			var id uint64
			if plus {
				id = le.Uint64(p[0:])
				p = p[entryOutSize:]
			}
			nl := int(le.Uint32(p[16:]))
			name := string(p[direntSize : direntSize+nl])
			off = le.Uint64(p[8:])
			if plus && id != 0 {
				if name == "." || name == ".." {
					c.tb.Fatalf("readdirplus gave %q node %d", name, id)
				}
				c.forget(id, 1)
			}
			if name != "." && name != ".." {
				names = append(names, name)
			}
			p = p[direntLen(nl):]
		}
	}
	sort.Strings(names)
	return names
}

// world is a share inside a base directory that also holds a sentinel file
// and an empty directory outside the share, which nothing may touch.
type world struct {
	base, share, sentinel, outside string
}

const sentinelData = "host secret, do not touch"

func newWorld(tb testing.TB) *world {
	tb.Helper()
	base := tb.TempDir()
	w := &world{
		base:     base,
		share:    filepath.Join(base, "share"),
		sentinel: filepath.Join(base, "sentinel"),
		outside:  filepath.Join(base, "outside"),
	}
	for _, d := range []string{w.share, w.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(w.sentinel, []byte(sentinelData), 0o644); err != nil {
		tb.Fatal(err)
	}
	return w
}

// check fails unless the sentinel is unchanged and nothing appeared
// outside the share.
func (w *world) check(tb testing.TB) {
	tb.Helper()
	b, err := os.ReadFile(w.sentinel)
	if err != nil || string(b) != sentinelData {
		tb.Fatalf("sentinel changed: %q, %v", b, err)
	}
	st, err := os.Lstat(w.sentinel)
	if err != nil || st.Mode() != 0o644 || st.Mode()&os.ModeType != 0 {
		tb.Fatalf("sentinel mode changed: %v %v", st.Mode(), err)
	}
	ents, err := os.ReadDir(w.base)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 3 || names[0] != "outside" || names[1] != "sentinel" || names[2] != "share" {
		tb.Fatalf("base directory holds %v", names)
	}
	if ents, _ := os.ReadDir(w.outside); len(ents) != 0 {
		tb.Fatalf("outside directory holds %d entries", len(ents))
	}
	if ents, _ := os.ReadDir("/"); len(ents) == 0 {
		tb.Fatalf("cannot list /")
	}
}

// server starts a server on w's share and an initialised client.
func (w *world) server(tb testing.TB, cfg Config) *client {
	tb.Helper()
	cfg.Root = w.share
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	c := newClient(tb, s)
	c.init()
	return c
}
