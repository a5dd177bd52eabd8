// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lines   []string
		want    sample
		wantErr string
		done    bool
	}{
		{
			name: "report",
			lines: []string{
				"[    0.1] kernel noise", "guestinit: ready=1", "guestinit: net_setup_ns=5",
				"guestinit: net_bulk_bytes=1048576\r", "guestinit: net_bulk_ns=1000000000",
				"guestinit: net_conns=10", "guestinit: net_conns_ns=2000000000", "guestinit: done=1",
			},
			want: sample{bulkBytes: 1 << 20, bulkNS: 1e9, conns: 10, connsNS: 2e9, setupNS: 5},
			done: true,
		},
		{name: "error", lines: []string{"guestinit: net_error=eth0: no such device\x1b[2J"}, wantErr: `"eth0: no such device\x1b[2J"`},
		{name: "negative", lines: []string{"guestinit: net_bulk_ns=-5"}, wantErr: "not a positive number"},
		{name: "garbage", lines: []string{"guestinit: net_conns=12abc"}, wantErr: "not a positive number"},
		{name: "twice", lines: []string{"guestinit: net_conns=1", "guestinit: net_conns=2"}, want: sample{conns: 1}, wantErr: "reported twice"},
		{name: "not at line start", lines: []string{"x guestinit: net_conns=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g guestReport
			for _, l := range tc.lines {
				g.parse(l)
			}
			if g.sample != tc.want || g.done != tc.done {
				t.Errorf("parse = %+v done %v, want %+v done %v", g.sample, g.done, tc.want, tc.done)
			}
			if !strings.Contains(g.netError, tc.wantErr) || (tc.wantErr == "") != (g.netError == "") {
				t.Errorf("parse: error %q, want one containing %q", g.netError, tc.wantErr)
			}
		})
	}
}

// TestSink speaks the guest's side of the protocol to the sink.
func TestSink(t *testing.T) {
	const size = 3<<20 + 5
	s, err := newSink(size)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", s.ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}

	c := dial()
	if _, err := c.Write(append([]byte{bulkMarker}, make([]byte, size)...)); err != nil {
		t.Fatal(err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint64(ack[:]); got != size {
		t.Errorf("ack = %d, want %d", got, size)
	}
	c.Close()
	for range 3 {
		c := dial()
		var b [1]byte
		if _, err := c.Write([]byte{echoMarker}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != echoMarker {
			t.Fatalf("echo = %q, %v; want %q", b, err, echoMarker)
		}
		c.Close()
	}
	c = dial()
	c.Write([]byte("?"))
	io.Copy(io.Discard, c) // the sink closes on an unknown kind
	c.Close()
	// A connection left open must not hold Close up.
	idle := dial()
	defer idle.Close()

	// Close joins every connection's goroutine: the counts are final.
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for an idle connection")
	}
	if r := s.take(); r.bulkBytes != size || r.echoes != 3 || len(r.errs) != 1 {
		t.Errorf("sink saw %d bulk bytes, %d echoes, errors %v; want %d, 3 and the unknown kind", r.bulkBytes, r.echoes, r.errs, size)
	}
}
