// SPDX-License-Identifier: Apache-2.0

package vsock_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/leaktest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
)

// dialResult is what a Dial in the background returned.
type dialResult struct {
	c   net.Conn
	err error
}

func dialAsync(ctx context.Context, d *vsock.Device, port uint32) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		c, err := d.Dial(ctx, port)
		ch <- dialResult{c, err}
	}()
	return ch
}

// hostDial connects the host to guest port gport, the guest accepting, and
// returns both ends.
func hostDial(t *testing.T, g *guest, gport uint32) (*vsock.Conn, *gconn) {
	t.Helper()
	res := dialAsync(context.Background(), g.dev, gport)
	p := g.recv()
	if p.hdr.Op() != vsock.OpRequest || p.hdr.DstPort() != gport {
		t.Fatalf("after Dial(%d) guest got %v, want REQUEST", gport, p)
	}
	gc := g.conn(gport, p.hdr.SrcPort())
	gc.send(vsock.OpResponse, 0, nil)
	r := <-res
	if r.err != nil {
		t.Fatalf("Dial(%d) = %v", gport, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c.(*vsock.Conn), gc
}

// guestConnect connects guest port gport to host port hport, where l
// listens, and returns both ends.
func guestConnect(t *testing.T, g *guest, l net.Listener, gport, hport uint32) (*vsock.Conn, *gconn) {
	t.Helper()
	gc := g.conn(gport, hport)
	gc.send(vsock.OpRequest, 0, nil)
	p := gc.expect(vsock.OpResponse)
	if got := p.hdr.BufAlloc(); got == 0 {
		t.Fatalf("RESPONSE buf_alloc = 0")
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*vsock.Conn), gc
}

func readFull(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("ReadFull(%d) = %v", n, err)
	}
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  vsock.Config
		ok   bool
	}{
		{"defaults", vsock.Config{GuestCID: 3}, true},
		{"reserved cid", vsock.Config{GuestCID: 2}, false},
		{"any cid", vsock.Config{GuestCID: 0xffffffff}, false},
		{"huge buffer", vsock.Config{GuestCID: 3, BufferSize: vsock.MaxBufferSize + 1}, false},
		{"odd queue", vsock.Config{GuestCID: 3, QueueSize: 3}, false},
		{"negative conns", vsock.Config{GuestCID: 3, MaxConnections: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := vsock.New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New(%+v) = %v, want ok %v", tt.cfg, err, tt.ok)
			}
			if err != nil && !errors.Is(err, vsock.ErrConfig) {
				t.Fatalf("New(%+v) = %v, want ErrConfig", tt.cfg, err)
			}
			if d != nil {
				d.Close()
			}
		})
	}
}

func TestConfigSpace(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	var b [8]byte
	g.mmio.Read(virtio.MMIOConfigSpace, b[:])
	if got := uint64(b[0]) | uint64(b[1])<<8; got != guestCID || b[4] != 0 {
		t.Fatalf("guest_cid = % x, want %d", b, guestCID)
	}
	g.mmio.Write(virtio.MMIOConfigSpace, []byte{9, 0, 0, 0})
	g.mmio.Read(virtio.MMIOConfigSpace, b[:4])
	if b[0] != guestCID {
		t.Fatalf("guest_cid writable: % x", b)
	}
	if vt.ReadReg(g.mmio, virtio.MMIODeviceID) != uint32(virtio.DeviceTypeVsock) {
		t.Fatal("wrong device ID")
	}
}

func TestHostDialGuestAccept(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	c, gc := hostDial(t, g, 5000)
	if got, want := c.RemoteAddr(), (vsock.Addr{CID: guestCID, Port: 5000}); got != want {
		t.Errorf("RemoteAddr() = %v, want %v", got, want)
	}
	if la := c.LocalAddr().(vsock.Addr); la.CID != vsock.HostCID || la.Port != gc.hport || la.Network() != "vsock" {
		t.Errorf("LocalAddr() = %v", la)
	}

	// Host to guest, larger than one rx buffer.
	msg := bytes.Repeat([]byte("host->guest "), 1000)
	if n, err := c.Write(msg); n != len(msg) || err != nil {
		t.Fatalf("Write(%d bytes) = %d, %v", len(msg), n, err)
	}
	if got := gc.read(len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("guest read %q..., want %q...", got[:20], msg[:20])
	}

	// Guest to host.
	gc.send(vsock.OpRW, 0, []byte("guest->host"))
	if got := readFull(t, c, 11); string(got) != "guest->host" {
		t.Fatalf("host read %q", got)
	}

	// Host close: SHUTDOWN both ways, the guest acknowledges with RST.
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	p := gc.expect(vsock.OpShutdown)
	if p.hdr.Flags() != vsock.ShutdownRecv|vsock.ShutdownSend {
		t.Fatalf("SHUTDOWN flags = %d, want 3", p.hdr.Flags())
	}
	gc.send(vsock.OpRST, 0, nil)
	waitFor(t, "the connection to be freed", func() bool { return vsock.ConnCount(g.dev) == 0 })
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
}

func TestGuestConnectHostListen(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	l, err := g.dev.Listen(1234)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := g.dev.Listen(1234); !errors.Is(err, vsock.ErrAddrInUse) {
		t.Fatalf("second Listen(1234) = %v, want ErrAddrInUse", err)
	}
	if got := l.Addr(); got != (vsock.Addr{CID: vsock.HostCID, Port: 1234}) {
		t.Fatalf("Addr() = %v", got)
	}
	c, gc := guestConnect(t, g, l, 40000, 1234)
	if got := c.RemoteAddr(); got != (vsock.Addr{CID: guestCID, Port: 40000}) {
		t.Fatalf("RemoteAddr() = %v", got)
	}
	gc.send(vsock.OpRW, 0, []byte("ping"))
	if got := readFull(t, c, 4); string(got) != "ping" {
		t.Fatalf("host read %q", got)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if got := gc.read(4); string(got) != "pong" {
		t.Fatalf("guest read %q", got)
	}

	// The guest closes: data sent before stays readable, then EOF, and the
	// device acknowledges with RST.
	gc.send(vsock.OpRW, 0, []byte("bye"))
	gc.send(vsock.OpShutdown, vsock.ShutdownRecv|vsock.ShutdownSend, nil)
	gc.expect(vsock.OpRST)
	if got := readFull(t, c, 3); string(got) != "bye" {
		t.Fatalf("host read %q", got)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after guest close = %d, %v, want io.EOF", n, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, vsock.ErrShutdown) {
		t.Fatalf("Write after guest close = %v, want ErrShutdown", err)
	}
	if n := vsock.ConnCount(g.dev); n != 0 {
		t.Fatalf("device holds %d connections", n)
	}
}

func TestRefused(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)

	// Guest connects to a port nobody listens on.
	gc := g.conn(40001, 77)
	gc.send(vsock.OpRequest, 0, nil)
	gc.expect(vsock.OpRST)

	// Host dials a port the guest refuses.
	res := dialAsync(context.Background(), g.dev, 88)
	p := g.recv()
	g.conn(88, p.hdr.SrcPort()).send(vsock.OpRST, 0, nil)
	if r := <-res; !errors.Is(r.err, vsock.ErrConnectionRefused) {
		t.Fatalf("Dial(88) = %v, want ErrConnectionRefused", r.err)
	}
	if got := g.dev.Metrics().ConnsRefused.Load(); got != 1 {
		t.Errorf("ConnsRefused = %d, want 1", got)
	}
}

func TestUnknownConnection(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	gc := g.conn(40002, 1000)
	for _, op := range []vsock.Op{vsock.OpRW, vsock.OpResponse, vsock.OpShutdown, vsock.OpCreditUpdate, vsock.OpCreditRequest} {
		gc.send(op, 0, nil)
		gc.expect(vsock.OpRST)
	}
	gc.send(vsock.OpRST, 0, nil) // never answered: RST storms must not loop
	g.quiet(50 * time.Millisecond)
	if got := g.dev.Metrics().UnknownConn.Load(); got != 6 {
		t.Errorf("UnknownConn = %d, want 6", got)
	}
}

func TestDialCancel(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := g.dev.Dial(ctx, 99)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial with a silent guest = %v, want context.DeadlineExceeded", err)
	}
	p := g.recv()
	gc := g.conn(99, p.hdr.SrcPort())
	gc.check(p, vsock.OpRequest)
	gc.expect(vsock.OpRST)
	// A late RESPONSE finds no connection.
	gc.send(vsock.OpResponse, 0, nil)
	gc.expect(vsock.OpRST)
	if n := vsock.ConnCount(g.dev); n != 0 {
		t.Fatalf("device holds %d connections", n)
	}
}

func TestHalfClose(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	c, gc := hostDial(t, g, 5001)

	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := gc.read(4); string(got) != "last" {
		t.Fatalf("guest read %q", got)
	}
	p := gc.expect(vsock.OpShutdown)
	if p.hdr.Flags() != vsock.ShutdownSend {
		t.Fatalf("SHUTDOWN flags = %d, want SEND", p.hdr.Flags())
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, vsock.ErrShutdown) {
		t.Fatalf("Write after CloseWrite = %v, want ErrShutdown", err)
	}

	// The other direction still flows, until the guest shuts it.
	gc.send(vsock.OpRW, 0, []byte("reply"))
	gc.send(vsock.OpShutdown, vsock.ShutdownSend, nil)
	if got, err := io.ReadAll(c); string(got) != "reply" || err != nil {
		t.Fatalf("ReadAll = %q, %v, want reply", got, err)
	}
	// The guest may still shut down receiving; then the connection ends.
	gc.send(vsock.OpShutdown, vsock.ShutdownRecv, nil)
	gc.expect(vsock.OpRST)
	waitFor(t, "the connection to be freed", func() bool { return vsock.ConnCount(g.dev) == 0 })
}

func TestGuestShutdownRecvFailsWrite(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	c, gc := hostDial(t, g, 5002)
	gc.send(vsock.OpShutdown, vsock.ShutdownRecv, nil)
	waitFor(t, "Write to fail", func() bool {
		_, err := c.Write([]byte("x"))
		return errors.Is(err, vsock.ErrShutdown)
	})
	// Reading still works.
	gc.send(vsock.OpRW, 0, []byte("ok"))
	if got := readFull(t, c, 2); string(got) != "ok" {
		t.Fatalf("read %q", got)
	}
}

// TestHostWriteBackpressure checks that a host Write never sends more than
// the guest's credit and that nothing is buffered on the host beyond it.
func TestHostWriteBackpressure(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	g.bufAlloc = 8192
	c, gc := hostDial(t, g, 5003)

	msg := make([]byte, 32<<10)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := c.Write(msg)
		done <- result{n, err}
	}()

	var got []byte
	sentCredit := uint32(0)
	for len(got) < len(msg) {
		// Collect what the device sends without returning credit.
		for uint32(len(got))-sentCredit < 8192 {
			p := g.recv()
			switch p.hdr.Op() {
			case vsock.OpRW:
				got = append(got, p.payload...)
			case vsock.OpCreditRequest:
			default:
				t.Fatalf("got %v", p)
			}
			if int(uint32(len(got))-sentCredit) > 8192 {
				t.Fatalf("device sent %d bytes with 8192 of credit", uint32(len(got))-sentCredit)
			}
		}
		if len(got) == len(msg) {
			break
		}
		// Out of credit: the device must stay silent (bar one
		// CREDIT_REQUEST) and the Write must stay blocked.
		time.Sleep(20 * time.Millisecond)
		for g.poll(); len(g.pending) > 0; g.pending = g.pending[1:] {
			if op := g.pending[0].hdr.Op(); op != vsock.OpCreditRequest {
				t.Fatalf("device sent %v without credit", g.pending[0])
			}
		}
		select {
		case r := <-done:
			t.Fatalf("Write returned %d, %v with %d bytes delivered", r.n, r.err, len(got))
		default:
		}
		gc.fwdCnt = uint32(len(got))
		sentCredit = gc.fwdCnt
		gc.send(vsock.OpCreditUpdate, 0, nil)
	}
	if r := <-done; r.n != len(msg) || r.err != nil {
		t.Fatalf("Write = %d, %v, want %d, nil", r.n, r.err, len(msg))
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("guest received different bytes")
	}
}

// TestRxStarvation checks that a Write waits for rx buffers and resumes
// when the driver posts more, without a host-side buffer.
func TestRxStarvation(t *testing.T) {
	lay := defaultLayout
	lay.queueSize = 4
	g := newGuest(t, vsock.Config{}, lay)
	c, gc := hostDial(t, g, 5011)
	g.repost = false
	msg := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB: eight 4 KiB buffers
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		done <- err
	}()
	var got []byte
	for len(got) < len(msg) {
		// Take packets until every buffer is used and parsed.
		for len(got) < len(msg) && (len(g.held) < int(lay.queueSize) || len(g.pending) > 0) {
			p := gc.expect(vsock.OpRW)
			got = append(got, p.payload...)
		}
		if len(got) < len(msg) {
			// The guest holds every buffer: the Write must wait.
			select {
			case err := <-done:
				t.Fatalf("Write returned %v with %d of %d bytes in the guest", err, len(got), len(msg))
			case <-time.After(10 * time.Millisecond):
			}
		}
		g.giveBack()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("guest received different bytes")
	}
}

// TestGuestWriteBackpressure checks the bounded host buffer: the device
// advertises BufferSize, returns credit as the host reads, and resets a
// guest that sends beyond it.
func TestGuestWriteBackpressure(t *testing.T) {
	const size = 4096
	g := newGuest(t, vsock.Config{BufferSize: size}, defaultLayout)
	l, err := g.dev.Listen(7)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, gc := guestConnect(t, g, l, 40003, 7)

	gc.send(vsock.OpRW, 0, make([]byte, size))
	waitFor(t, "the data to arrive", func() bool { return vsock.Buffered(c) == size })
	readFull(t, c, size)
	p := gc.expect(vsock.OpCreditUpdate)
	if p.hdr.FwdCnt() != size || p.hdr.BufAlloc() != size {
		t.Fatalf("CREDIT_UPDATE %v, want fwd_cnt %d buf_alloc %d", p, size, size)
	}

	// A CREDIT_REQUEST is answered.
	gc.send(vsock.OpCreditRequest, 0, nil)
	gc.expect(vsock.OpCreditUpdate)

	// Fill the buffer again, then overrun it: the connection is reset and
	// the device holds no more than BufferSize bytes.
	gc.send(vsock.OpRW, 0, make([]byte, size))
	gc.send(vsock.OpRW, 0, []byte{1})
	gc.expect(vsock.OpRST)
	if got := g.dev.Metrics().CreditViolations.Load(); got != 1 {
		t.Fatalf("CreditViolations = %d, want 1", got)
	}
	if n := vsock.Buffered(c); n != size {
		t.Fatalf("host holds %d bytes, want %d", n, size)
	}
	readFull(t, c, size)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, vsock.ErrConnectionReset) {
		t.Fatalf("Read after overrun = %v, want ErrConnectionReset", err)
	}
}

func TestDeadlines(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	g.bufAlloc = 0 // no credit: every Write blocks
	c, gc := hostDial(t, g, 5004)

	start := time.Now()
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past deadline = %v, want a timeout", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("Read deadline took %v", time.Since(start))
	}

	c.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	n, err := c.Write([]byte("blocked"))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write without credit = %d, %v, want 0, deadline exceeded", n, err)
	}
	gc.expect(vsock.OpCreditRequest)

	// A deadline in the past fails at once; clearing it lets I/O proceed.
	c.SetDeadline(time.Now().Add(-time.Second))
	if _, err := c.Read(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with past deadline = %v", err)
	}
	c.SetDeadline(time.Time{})
	g.bufAlloc = 1 << 16
	gc.send(vsock.OpCreditUpdate, 0, nil)
	if _, err := c.Write([]byte("free")); err != nil {
		t.Fatalf("Write after credit = %v", err)
	}
	if got := gc.read(4); string(got) != "free" {
		t.Fatalf("guest read %q", got)
	}

	// A deadline set while a Read blocks wakes it.
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked Read = %v, want deadline exceeded", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("blocked Read did not see the new deadline")
	}
}

func TestCloseUnblocks(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	g.bufAlloc = 0
	c, _ := hostDial(t, g, 5005)
	errc := make(chan error, 2)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	go func() {
		_, err := c.Write([]byte("x"))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	for range 2 {
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked call after Close = %v, want net.ErrClosed", err)
		}
	}
}

func TestCloseTimeout(t *testing.T) {
	g := newGuest(t, vsock.Config{CloseTimeout: 30 * time.Millisecond}, defaultLayout)
	c, gc := hostDial(t, g, 5006)
	c.Close()
	gc.expect(vsock.OpShutdown)
	// The guest never answers: the device gives up with RST.
	gc.expect(vsock.OpRST)
	if n := vsock.ConnCount(g.dev); n != 0 {
		t.Fatalf("device holds %d connections", n)
	}
}

func TestDeviceReset(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	l, err := g.dev.Listen(8)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c1, _ := hostDial(t, g, 5007)
	c2, _ := guestConnect(t, g, l, 40004, 8)
	pending := dialAsync(context.Background(), g.dev, 5008)
	g.recv() // the REQUEST, never answered

	errc := make(chan error, 1)
	go func() {
		_, err := c1.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	g.reset()

	if err := <-errc; !errors.Is(err, vsock.ErrDeviceReset) {
		t.Fatalf("blocked Read after reset = %v, want ErrDeviceReset", err)
	}
	if r := <-pending; !errors.Is(r.err, vsock.ErrDeviceReset) {
		t.Fatalf("pending Dial after reset = %v, want ErrDeviceReset", r.err)
	}
	if _, err := c2.Write([]byte("x")); !errors.Is(err, vsock.ErrDeviceReset) {
		t.Fatalf("Write after reset = %v, want ErrDeviceReset", err)
	}
	if _, err := g.dev.Dial(context.Background(), 1); !errors.Is(err, vsock.ErrNotActive) {
		t.Fatalf("Dial after reset = %v, want ErrNotActive", err)
	}
	if n := vsock.ConnCount(g.dev); n != 0 {
		t.Fatalf("device holds %d connections after reset", n)
	}
	if _, err := g.dev.Listen(8); !errors.Is(err, vsock.ErrAddrInUse) {
		t.Fatalf("listener did not survive reset: Listen(8) = %v", err)
	}
}

func TestDeviceClose(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	l, err := g.dev.Listen(9)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := hostDial(t, g, 5009)
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := g.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.dev.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, vsock.ErrClosed) {
		t.Fatalf("Read after device Close = %v, want ErrClosed", err)
	}
	if _, err := g.dev.Dial(context.Background(), 1); !errors.Is(err, vsock.ErrClosed) {
		t.Fatalf("Dial after Close = %v, want ErrClosed", err)
	}
	if _, err := g.dev.Listen(10); !errors.Is(err, vsock.ErrClosed) {
		t.Fatalf("Listen after Close = %v, want ErrClosed", err)
	}
	g.reset() // the transport may still reset a closed device
}

func TestConnectionLimit(t *testing.T) {
	g := newGuest(t, vsock.Config{MaxConnections: 4, Backlog: 2}, defaultLayout)
	l, err := g.dev.Listen(11)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Two fit the backlog, the rest are refused.
	for i := range uint32(5) {
		g.conn(41000+i, 11).send(vsock.OpRequest, 0, nil)
	}
	// RSTs may overtake RESPONSEs: count the answers.
	ops := map[vsock.Op]int{}
	for range 5 {
		ops[g.recv().hdr.Op()]++
	}
	if ops[vsock.OpResponse] != 2 || ops[vsock.OpRST] != 3 {
		t.Fatalf("answers %v, want 2 RESPONSE and 3 RST", ops)
	}
	for range 2 {
		if _, err := l.Accept(); err != nil {
			t.Fatal(err)
		}
	}
	// Now the connection limit: 2 held, 2 more fit.
	for i := range uint32(4) {
		g.conn(42000+i, 11).send(vsock.OpRequest, 0, nil)
		if i == 1 {
			for range 2 {
				l.Accept()
			}
		}
	}
	clear(ops)
	for range 4 {
		ops[g.recv().hdr.Op()]++
	}
	if ops[vsock.OpResponse] != 2 || ops[vsock.OpRST] != 2 {
		t.Fatalf("answers %v, want 2 RESPONSE and 2 RST", ops)
	}
	if got := g.dev.Metrics().ConnLimit.Load(); got != 2 {
		t.Errorf("ConnLimit = %d, want 2", got)
	}
	if _, err := g.dev.Dial(context.Background(), 1); !errors.Is(err, vsock.ErrTooManyConnections) {
		t.Fatalf("Dial at the limit = %v, want ErrTooManyConnections", err)
	}
}

// TestHostile sends malformed packets; each is dropped or refused and
// counted, and the device keeps working.
func TestHostile(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	l, err := g.dev.Listen(12)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, gc := guestConnect(t, g, l, 40005, 12)
	m := g.dev.Metrics()

	hdr := func(mod func(h vsock.Header)) []byte {
		h := g.header(vsock.OpRW, 40005, 12)
		mod(h)
		return h
	}
	tests := []struct {
		name    string
		data    []byte
		split   int
		counter func() uint64
		rst     bool
	}{
		{"short header", make([]byte, 10), 0, m.BadPackets.Load, false},
		{"empty", nil, 0, m.BadPackets.Load, false},
		{"len past chain", hdr(func(h vsock.Header) { h.SetLen(100) }), 0, m.BadPackets.Load, false},
		{"len huge", hdr(func(h vsock.Header) { h.SetLen(0xffffffff) }), 0, m.BadPackets.Load, false},
		{"wrong src cid", hdr(func(h vsock.Header) { h.SetSrcCID(4) }), 0, m.WrongCID.Load, false},
		{"wrong dst cid", hdr(func(h vsock.Header) { h.SetDstCID(guestCID) }), 0, m.WrongCID.Load, false},
		{"cid high bits", hdr(func(h vsock.Header) { h.SetSrcCID(1<<32 | guestCID) }), 0, m.WrongCID.Load, false},
		{"seqpacket", hdr(func(h vsock.Header) { h.SetType(vsock.TypeSeqpacket); h.SetSrcPort(9) }), 0, m.UnknownType.Load, true},
		{"unknown op", hdr(func(h vsock.Header) { h.SetOp(99) }), 0, m.UnknownOp.Load, false},
		{"invalid op", hdr(func(h vsock.Header) { h.SetOp(vsock.OpInvalid) }), 0, m.UnknownOp.Load, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.counter()
			if len(tt.data) == 0 {
				// A zero-length descriptor chain.
				unlock := vsock.LockGuest(g.dev)
				g.reclaimTxLocked()
				i := g.txFree[len(g.txFree)-1]
				g.txFree = g.txFree[:len(g.txFree)-1]
				g.tx.SetDesc(i, vt.Desc{Addr: uint64(g.txBufs[i]), Len: 0})
				g.tx.Publish(i)
				unlock()
				vt.Kick(g.mmio, 1)
			} else {
				g.sendRaw(tt.data, tt.split)
			}
			g.drainTx()
			if got := tt.counter(); got != before+1 {
				t.Fatalf("counter = %d, want %d", got, before+1)
			}
			if tt.rst {
				if p := g.recv(); p.hdr.Op() != vsock.OpRST {
					t.Fatalf("got %v, want RST", p)
				}
			}
			g.quiet(5 * time.Millisecond)
		})
	}

	// Credit values meant to overflow: the guest grants 2 bytes, takes
	// them, then claims to have consumed far more than it was sent. The
	// bogus fwd_cnt is ignored, so the device has no credit instead of
	// 2^32 - something.
	g.bufAlloc = 2
	gc.send(vsock.OpCreditUpdate, 0, nil)
	if _, err := c.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	gc.expect(vsock.OpRW)
	h := g.header(vsock.OpCreditUpdate, 40005, 12)
	h.SetFwdCnt(gc.fwdCnt + 1000)
	g.sendRaw(h, 0)
	g.drainTx()
	if got := m.BadCredit.Load(); got != 1 {
		t.Fatalf("BadCredit = %d, want 1", got)
	}
	c.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	if n, err := c.Write([]byte("x")); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write with bogus credit = %d, %v, want blocked", n, err)
	}
	gc.expect(vsock.OpCreditRequest)
	c.SetWriteDeadline(time.Time{})
	gc.fwdCnt += 2
	g.bufAlloc = 1 << 16
	gc.send(vsock.OpCreditUpdate, 0, nil) // honest again
	if _, err := c.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	if got := gc.read(2); string(got) != "ok" {
		t.Fatalf("guest read %q", got)
	}

	// A header split across descriptors is fine.
	h = g.header(vsock.OpRW, 40005, 12)
	h.SetLen(5)
	h.SetFwdCnt(gc.fwdCnt)
	g.sendRaw(append(h, "split"...), 20)
	if got := readFull(t, c, 5); string(got) != "split" {
		t.Fatalf("read %q", got)
	}

	// A RESPONSE on an established connection is a protocol error.
	gc.send(vsock.OpResponse, 0, nil)
	gc.expect(vsock.OpRST)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, vsock.ErrConnectionReset) {
		t.Fatalf("Read after protocol error = %v", err)
	}

	// The device still works.
	guestConnect(t, g, l, 40006, 12)
}

func TestSmallRxBuffer(t *testing.T) {
	lay := defaultLayout
	lay.rxBuf = 16 // smaller than a header
	g := newGuest(t, vsock.Config{}, lay)
	g.conn(1, 2).send(vsock.OpRequest, 0, nil) // answered with RST, into a too-small buffer
	waitFor(t, "a small buffer to be counted", func() bool { return g.dev.Metrics().SmallRxBuffers.Load() > 0 })
}

// TestBrokenQueue checks that a broken tx queue asks for a reset.
func TestBrokenQueue(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	unlock := vsock.LockGuest(g.dev)
	g.tx.SetAvailIdx(1000) // far ahead of the queue size
	unlock()
	vt.Kick(g.mmio, 1)
	waitFor(t, "DEVICE_NEEDS_RESET", func() bool {
		return vt.ReadReg(g.mmio, virtio.MMIOStatus)&virtio.StatusDeviceNeedsReset != 0
	})
	if got := g.dev.Metrics().NeedsReset.Load(); got != 1 {
		t.Fatalf("NeedsReset = %d", got)
	}
}

// TestStream moves data both ways at once through several connections
// while another goroutine hammers QueueNotify, for the race detector.
func TestStream(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	const conns, size = 3, 200 << 10
	hosts := make([]*vsock.Conn, conns)
	guests := make([]*gconn, conns)
	for i := range conns {
		hosts[i], guests[i] = hostDial(t, g, uint32(6000+i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				g.dev.QueueNotify(rand.IntN(3))
				runtime.Gosched()
			}
		}
	})
	msgs := make([][]byte, conns)
	errs := make(chan error, 2*conns)
	for i := range conns {
		msgs[i] = make([]byte, size)
		for j := range msgs[i] {
			msgs[i][j] = byte(rand.Uint32())
		}
		wg.Go(func() {
			_, err := hosts[i].Write(msgs[i])
			errs <- err
		})
	}
	got := make([][]byte, conns)
	remaining := conns
	for remaining > 0 {
		p := g.recv()
		i := int(p.hdr.DstPort()) - 6000
		if i < 0 || i >= conns {
			t.Fatalf("unexpected %v", p)
		}
		gc := guests[i]
		switch p.hdr.Op() {
		case vsock.OpRW:
			got[i] = append(got[i], p.payload...)
			gc.fwdCnt += uint32(len(p.payload))
			if len(got[i]) == size {
				remaining--
			}
			if gc.fwdCnt%(64<<10) < uint32(len(p.payload)) {
				gc.send(vsock.OpCreditUpdate, 0, nil)
			}
		case vsock.OpCreditRequest:
			gc.send(vsock.OpCreditUpdate, 0, nil)
		default:
			t.Fatalf("unexpected %v", p)
		}
	}
	for i := range conns {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Fatalf("connection %d: data differs", i)
		}
	}
	// Guest to host, several packets per connection.
	for i := range conns {
		wg.Go(func() {
			b := make([]byte, 3*4096)
			_, err := io.ReadFull(hosts[i], b)
			if err == nil && !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, len(b))) {
				err = errors.New("data differs")
			}
			errs <- err
		})
	}
	for range 3 {
		for i := range conns {
			guests[i].send(vsock.OpRW, 0, bytes.Repeat([]byte{byte(i)}, 4096))
		}
	}
	for range 2 * conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestNoGoroutineLeak checks that a device's goroutines are gone after
// Close, with connections and blocked calls outstanding.
func TestNoGoroutineLeak(t *testing.T) {
	before := leaktest.Count()
	func() {
		g := newGuest(t, vsock.Config{}, defaultLayout)
		g.bufAlloc = 0
		c, _ := hostDial(t, g, 5010)
		c.SetDeadline(time.Now().Add(time.Hour))
		errc := make(chan error, 2)
		go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
		go func() { _, err := c.Write([]byte("x")); errc <- err }()
		time.Sleep(10 * time.Millisecond)
		g.dev.Close()
		<-errc
		<-errc
	}()
	if n := leaktest.Settle(before, waitTimeout); n > before {
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, leaktest.Stacks())
	}
}
