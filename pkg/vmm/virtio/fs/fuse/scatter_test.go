// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// TestScatteredLarge writes and reads payloads larger than HeadSize through
// ServeScattered, split over many buffers, and checks them against the
// flat path.
func TestScatteredLarge(t *testing.T) {
	w := newWorld(t)
	c := w.server(t, Config{})
	f, fh := c.create(RootID, "big", unix.O_RDWR, 0o644)
	data := make([]byte, 300<<10+17)
	for i := range data {
		data[i] = byte(i * 31)
	}
	for _, pieces := range []int{1, 7, 4096, 2000} {
		c.unique |= 1 // the next request is even: scattered
		if n := c.write(f.id, fh, uint64(pieces), data); n != uint32(len(data)) {
			t.Fatalf("scattered write of %d: %d", len(data), n)
		}
		// Read back scattered, into pieces of 13 times that size: 1 and
		// 7 give more buffers than one preadv takes (UIO_MAXIOV).
		req := c.request(opRead, f.id, ioBody(fh, uint64(pieces), uint32(len(data))))
		reply := make([]byte, OutHeaderSize+len(data))
		bufs := [][]byte{reply[:OutHeaderSize]}
		for rest := reply[OutHeaderSize:]; len(rest) > 0; {
			k := min(len(rest), pieces*13)
			bufs = append(bufs, rest[:k])
			rest = rest[k:]
		}
		n := c.s.ServeScattered(bytes.Clone(req[:min(len(req), HeadSize)]), nil, bufs, c.scratch)
		if n != len(reply) || int32(le.Uint32(reply[4:])) != 0 {
			t.Fatalf("scattered read: %d bytes, errno %d", n, -int32(le.Uint32(reply[4:])))
		}
		if !bytes.Equal(reply[OutHeaderSize:], data) {
			t.Fatalf("scattered read back differs (pieces %d)", pieces)
		}
		c.unique &^= 1 // odd next: flat
		if got := c.read(f.id, fh, uint64(pieces), uint32(len(data))); !bytes.Equal(got, data) {
			t.Fatalf("flat read back differs")
		}
	}
	// A non-WRITE request longer than HeadSize is refused, not read from
	// the tail.
	req := c.request(opLookup, RootID, bytes.Repeat([]byte("a"), HeadSize), cstr("big"))
	if n := c.s.ServeScattered(req[:HeadSize], [][]byte{req[HeadSize:]}, [][]byte{c.reply}, c.scratch); n != OutHeaderSize ||
		int32(le.Uint32(c.reply[4:])) != -int32(unix.EINVAL) {
		t.Errorf("long LOOKUP: %d", n)
	}
	// A WRITE whose header claims more than head and tail hold.
	req = c.request(opWrite, f.id, ioBody(fh, 0, 100), make([]byte, 100))
	le.PutUint32(req[0:], uint32(len(req)+1))
	if n := c.s.ServeScattered(req, nil, [][]byte{c.reply}, c.scratch); n != OutHeaderSize ||
		int32(le.Uint32(c.reply[4:])) != -int32(unix.EINVAL) {
		t.Errorf("overlong WRITE: %d", n)
	}
	// No reply space: nothing written, FORGET still served.
	if n := c.s.ServeScattered(c.request(opForget, f.id, u64(1)), nil, nil, c.scratch); n != 0 {
		t.Errorf("FORGET answered %d", n)
	}
	w.check(t)
}
