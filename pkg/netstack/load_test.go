// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
)

// sinkServer hashes everything it receives and writes the hash back.
func sinkServer(t testing.TB) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h := sha256.New()
			io.Copy(h, c)
			c.Write(h.Sum(nil))
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// TestBulkTransfer sends MSB_NETSTACK_BULK_MIB (default 1024) MiB from the
// guest through the stack to a host socket and compares SHA-256 sums.
func TestBulkTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk transfer skipped in -short")
	}
	mib := 1024
	if v := os.Getenv("MSB_NETSTACK_BULK_MIB"); v != "" {
		if _, err := fmtSscan(v, &mib); err != nil {
			t.Fatal(err)
		}
	}
	port := sinkServer(t)
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := g.DialTCP(ctx, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.10"), port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := sha256.New()
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i*7 + i>>8)
	}
	start := time.Now()
	for i := 0; i < mib*4; i++ {
		chunk[0] = byte(i)
		h.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("write after %d chunks: %v", i, err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, sum); err != nil {
		t.Fatalf("read sum: %v", err)
	}
	el := time.Since(start)
	if string(sum) != string(h.Sum(nil)) {
		t.Fatalf("sha256 mismatch after %d MiB", mib)
	}
	t.Logf("%d MiB guest->host in %v: %.0f MiB/s; stats %+v", mib, el, float64(mib)/el.Seconds(), s.Stats())
}

// TestManyConnectionsNoLeaks opens thousands of short connections and then
// checks that goroutines and file descriptors return to their baseline
// after Close.
func TestManyConnectionsNoLeaks(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	e := startEcho(t)
	runtime.GC()
	baseG := runtime.NumGoroutine()
	baseFD := countFDs(t)
	fn := &fakeNet{}
	g, err := netstacktest.NewGuest()
	if err != nil {
		t.Fatal(err)
	}
	s, err := netstack.New(netstack.Config{WriteFrame: g.DeliverFrame, Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	g.Start(s.DeliverFrame)
	dst := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.10"), e.port)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	start := time.Now()
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := tryTCP(context.Background(), g.DialTCP, dst); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("connection failed: %v", err)
		}
		failed++
	}
	t.Logf("%d connections in %v (%.0f/s), %d failed; stats %+v", n, el, float64(n)/el.Seconds(), failed, s.Stats())
	// A connection still open on the stack side when the guest leaves is
	// closed by Close, which must join every goroutine.
	g.Close()
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		gr, fd := runtime.NumGoroutine(), countFDs(t)
		if gr <= baseG+2 && fd <= baseFD+2 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("leak: goroutines %d (baseline %d), fds %d (baseline %d)\n%s", gr, baseG, fd, baseFD, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func fmtSscan(s string, v *int) (int, error) { return fmt.Sscan(s, v) }
