// SPDX-License-Identifier: Apache-2.0

package vsock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
)

// startProxy runs a UnixProxy for g until the test ends and returns its
// socket path.
func startProxy(t *testing.T, g *guest, cfg vsock.UnixConfig) string {
	t.Helper()
	cfg.Path = filepath.Join(t.TempDir(), "v.sock")
	p, err := vsock.NewUnixProxy(g.dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	waitFor(t, "the proxy socket", func() bool {
		c, err := net.Dial("unix", cfg.Path)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// The probe connections above are closed without a line; the proxy
	// drops them.
	return cfg.Path
}

func TestUnixProxyConnect(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	path := startProxy(t, g, vsock.UnixConfig{})

	uc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(waitTimeout))
	// Bytes right after the line belong to the guest.
	if _, err := io.WriteString(uc, "CONNECT 5000\nearly"); err != nil {
		t.Fatal(err)
	}
	p := g.recv()
	if p.hdr.Op() != vsock.OpRequest || p.hdr.DstPort() != 5000 {
		t.Fatalf("guest got %v, want REQUEST to 5000", p)
	}
	gc := g.conn(5000, p.hdr.SrcPort())
	gc.send(vsock.OpResponse, 0, nil)

	br := bufio.NewReader(uc)
	line, err := br.ReadString('\n')
	if want := fmt.Sprintf("OK %d\n", gc.hport); line != want || err != nil {
		t.Fatalf("answer %q, %v, want %q", line, err, want)
	}
	if got := gc.read(5); string(got) != "early" {
		t.Fatalf("guest read %q", got)
	}
	gc.send(vsock.OpRW, 0, []byte("from guest"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "from guest" {
		t.Fatalf("client read %q, %v", buf, err)
	}

	// Client half-close reaches the guest as SHUTDOWN(SEND); the guest's
	// close reaches the client as EOF.
	uc.(*net.UnixConn).CloseWrite()
	if p := gc.expect(vsock.OpShutdown); p.hdr.Flags() != vsock.ShutdownSend {
		t.Fatalf("SHUTDOWN flags %d, want SEND", p.hdr.Flags())
	}
	gc.send(vsock.OpShutdown, vsock.ShutdownRecv|vsock.ShutdownSend, nil)
	gc.expect(vsock.OpRST)
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
		t.Fatalf("client after guest close: %q, %v, want EOF", rest, err)
	}
}

func TestUnixProxyBadClients(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	path := startProxy(t, g, vsock.UnixConfig{HandshakeTimeout: 100 * time.Millisecond, DialTimeout: time.Second})

	tests := []struct {
		name  string
		send  string
		guest func(t *testing.T) // plays the guest's side, if any
	}{
		{"bad verb", "HELLO 5000\n", nil},
		{"bad port", "CONNECT x\n", nil},
		{"port too big", "CONNECT 4294967296\n", nil},
		{"no newline", "CONNECT 5000", nil},
		{"too long", strings.Repeat("A", 200), nil},
		{"silent", "", nil},
		{"refused", "CONNECT 77\n", func(t *testing.T) {
			p := g.recv()
			g.conn(77, p.hdr.SrcPort()).send(vsock.OpRST, 0, nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uc, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			uc.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := io.WriteString(uc, tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.guest != nil {
				tt.guest(t)
			}
			// ECONNRESET: the proxy closed with the client's bytes unread.
			got, err := io.ReadAll(uc)
			if len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
				t.Fatalf("client got %q, %v, want the connection closed", got, err)
			}
		})
	}
	if n := vsock.ConnCount(g.dev); n != 0 {
		t.Fatalf("device holds %d connections", n)
	}
}

func TestUnixProxyForwardGuest(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	path := startProxy(t, g, vsock.UnixConfig{ForwardGuest: true, DialTimeout: time.Second})

	ln, err := net.Listen("unix", path+"_1234")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// Nothing at <path>_1235: RST.
	g.conn(40010, 1235).send(vsock.OpRequest, 0, nil)
	g.conn(40010, 1235).expect(vsock.OpRST)

	gc := g.conn(40011, 1234)
	gc.send(vsock.OpRequest, 0, nil)
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.SetDeadline(time.Now().Add(waitTimeout))
	gc.expect(vsock.OpResponse)
	gc.send(vsock.OpRW, 0, []byte("to host"))
	buf := make([]byte, 7)
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "to host" {
		t.Fatalf("host process read %q, %v", buf, err)
	}
	if _, err := hc.Write([]byte("to guest")); err != nil {
		t.Fatal(err)
	}
	if got := gc.read(8); string(got) != "to guest" {
		t.Fatalf("guest read %q", got)
	}
	// A Listen on the port takes precedence over forwarding.
	l, err := g.dev.Listen(1234)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	guestConnect(t, g, l, 40012, 1234)
}

// TestUnixProxyStop stops a proxy with a connection in flight: Run returns
// and the connection ends.
func TestUnixProxyStop(t *testing.T) {
	g := newGuest(t, vsock.Config{}, defaultLayout)
	path := filepath.Join(t.TempDir(), "v.sock")
	p, err := vsock.NewUnixProxy(g.dev, vsock.UnixConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	var uc net.Conn
	waitFor(t, "the proxy socket", func() bool {
		uc, err = net.Dial("unix", path)
		return err == nil
	})
	defer uc.Close()
	io.WriteString(uc, "CONNECT 5000\n")
	pk := g.recv()
	gc := g.conn(5000, pk.hdr.SrcPort())
	gc.send(vsock.OpResponse, 0, nil)
	uc.SetDeadline(time.Now().Add(waitTimeout))
	if line, err := bufio.NewReader(uc).ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("answer %q, %v", line, err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if _, err := io.ReadAll(uc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client after stop: %v", err)
	}
	gc.expect(vsock.OpShutdown)
	if _, err := vsock.NewUnixProxy(g.dev, vsock.UnixConfig{}); !errors.Is(err, vsock.ErrConfig) {
		t.Fatalf("NewUnixProxy without a path = %v", err)
	}
}
