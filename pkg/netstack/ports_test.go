// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// portsConfig is a Config that touches nothing but loopback.
func portsConfig(ports ...netstack.Port) netstack.Config {
	return netstack.Config{
		HostAddrs:  []netip.Addr{},
		DNSServers: []netip.AddrPort{},
		Ports:      ports,
		// fakeNet keeps any stray egress on loopback too.
		Dial: (&fakeNet{}).Dial,
	}
}

// guestEchoTCP serves TCP echo on the guest's port until the returned stop
// is called; stop waits for every server goroutine.
func guestEchoTCP(t testing.TB, g *netstacktest.Guest, port uint16) (stop func()) {
	t.Helper()
	ln, err := g.ListenTCP(port)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// guestEchoUDP echoes datagrams on the guest's port, prefixed with "echo:".
func guestEchoUDP(t testing.TB, g *netstacktest.Guest, port uint16) (stop func()) {
	t.Helper()
	pc, err := g.ListenUDP(port)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { pc.Close(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// echoRoundTrip sends size random bytes over c and checks that the echo
// has the same SHA-256.
func echoRoundTrip(c net.Conn, size int) error {
	c.SetDeadline(time.Now().Add(60 * time.Second))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		chunk := make([]byte, 32<<10)
		left := size
		for left > 0 {
			b := chunk[:min(left, len(chunk))]
			rand.Read(b)
			sent.Write(b)
			if _, err := c.Write(b); err != nil {
				errc <- err
				return
			}
			left -= len(b)
		}
		errc <- c.(*net.TCPConn).CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", n, err)
	}
	if n != int64(size) {
		return fmt.Errorf("echoed %d bytes, want %d", n, size)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return errors.New("checksum mismatch")
	}
	return nil
}

func dialPublished(t testing.TB, s *netstack.Stack, i int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.PublishedPorts()[i].HostAddr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPublishTCPRoundTrip(t *testing.T) {
	s, g := netstacktest.Connect(t, portsConfig(netstack.Port{GuestPort: 8080}))
	guestEchoTCP(t, g, 8080)
	pub := s.PublishedPorts()
	if len(pub) != 1 || pub[0].HostAddr.Addr() != netip.MustParseAddr("127.0.0.1") || pub[0].HostAddr.Port() == 0 ||
		pub[0].GuestPort != 8080 || pub[0].Protocol != 0 {
		t.Fatalf("PublishedPorts = %v, want 127.0.0.1:<picked> -> 8080", pub)
	}
	c := dialPublished(t, s, 0)
	defer c.Close()
	const size = 4 << 20
	if err := echoRoundTrip(c, size); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.IngressTCP != 1 || st.PayloadToGuest < size || st.PayloadFromGuest < size {
		t.Errorf("stats %+v", st)
	}
}

func TestPublishTCPConcurrent(t *testing.T) {
	s, g := netstacktest.Connect(t, portsConfig(netstack.Port{Protocol: policy.TCP, GuestPort: 9000}))
	guestEchoTCP(t, g, 9000)
	const conns = 8
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", s.PublishedPorts()[0].HostAddr.String(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := echoRoundTrip(c, 512<<10); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.Stats().IngressTCP; got != conns {
		t.Errorf("IngressTCP = %d, want %d", got, conns)
	}
}

// expectClosed checks that the host connection ends (EOF or reset) well
// before the deadline, without data.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	start := time.Now()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("hello")) // may fail already
	n, err := c.Read(make([]byte, 16))
	if err == nil || isTimeout(err) {
		t.Fatalf("read = %d, %v; want the connection closed", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed after %v", d)
	}
}

func TestPublishTCPGuestNotListening(t *testing.T) {
	s, _ := netstacktest.Connect(t, portsConfig(netstack.Port{GuestPort: 7777}))
	c := dialPublished(t, s, 0)
	defer c.Close()
	expectClosed(t, c)
	if st := s.Stats(); st.IngressTCP != 0 || st.RefusedFlows != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestPublishIngressPolicy(t *testing.T) {
	pol := policy.Public()
	pol.Rules = append([]policy.Rule{{
		Action: policy.Deny, Direction: policy.Ingress, Destination: policy.AnyDest(),
		Ports: []policy.PortRange{policy.Port(8081)},
	}}, pol.Rules...)
	cfg := portsConfig(
		netstack.Port{GuestPort: 8081},
		netstack.Port{GuestPort: 8082},
		netstack.Port{Protocol: policy.UDP, GuestPort: 8081},
	)
	cfg.Policy = pol
	s, g := netstacktest.Connect(t, cfg)
	guestEchoTCP(t, g, 8081)
	guestEchoTCP(t, g, 8082)
	guestEchoUDP(t, g, 8081)

	denied := dialPublished(t, s, 0)
	defer denied.Close()
	expectClosed(t, denied)

	allowed := dialPublished(t, s, 1)
	defer allowed.Close()
	if err := echoRoundTrip(allowed, 1<<10); err != nil {
		t.Fatalf("allowed port: %v", err)
	}

	uc, err := net.Dial("udp", s.PublishedPorts()[2].HostAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("x"))
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(make([]byte, 16)); err == nil {
		t.Errorf("denied UDP port answered %d bytes", n)
	}
	if st := s.Stats(); st.IngressDenied != 2 || st.IngressTCP != 1 || st.IngressUDP != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestPublishPolicyNoneDenies(t *testing.T) {
	cfg := portsConfig(netstack.Port{GuestPort: 80})
	cfg.Policy = policy.None()
	s, g := netstacktest.Connect(t, cfg)
	guestEchoTCP(t, g, 80)
	c := dialPublished(t, s, 0)
	defer c.Close()
	expectClosed(t, c)
}

func TestPublishUDPTwoPeers(t *testing.T) {
	s, g := netstacktest.Connect(t, portsConfig(netstack.Port{Protocol: policy.UDP, GuestPort: 5353}))
	guestEchoUDP(t, g, 5353)
	hostAddr := s.PublishedPorts()[0].HostAddr
	if hostAddr.Addr() != netip.MustParseAddr("127.0.0.1") || hostAddr.Port() == 0 {
		t.Fatalf("bound %v", hostAddr)
	}
	var peers [2]net.Conn
	for i := range peers {
		c, err := net.Dial("udp", hostAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		peers[i] = c
	}
	buf := make([]byte, 64)
	for round := range 3 {
		for i, c := range peers {
			msg := fmt.Sprintf("peer%d-round%d", i, round)
			var got string
			for try := 0; try < 5 && got == ""; try++ { // UDP: the first datagram may race ARP
				c.Write([]byte(msg))
				c.SetReadDeadline(time.Now().Add(time.Second))
				if n, err := c.Read(buf); err == nil {
					got = string(buf[:n])
				}
			}
			if got != "echo:"+msg {
				t.Fatalf("peer %d round %d: got %q", i, round, got)
			}
		}
	}
	if st := s.Stats(); st.IngressUDP != 2 {
		t.Errorf("IngressUDP = %d, want 2 (one session per peer)", st.IngressUDP)
	}
}

func TestPublishUDPIdleTimeout(t *testing.T) {
	cfg := portsConfig(netstack.Port{Protocol: policy.UDP, GuestPort: 5000})
	cfg.UDPIdleTimeout = 200 * time.Millisecond
	s, g := netstacktest.Connect(t, cfg)
	guestEchoUDP(t, g, 5000)
	c, err := net.Dial("udp", s.PublishedPorts()[0].HostAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for round := range 2 {
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			c.Write([]byte("hi"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			ok = err == nil && string(buf[:n]) == "echo:hi"
		}
		if !ok {
			t.Fatalf("round %d: no echo", round)
		}
		time.Sleep(600 * time.Millisecond) // let the session expire
	}
	if got := s.Stats().IngressUDP; got != 2 {
		t.Errorf("IngressUDP = %d, want 2 (session expired and was recreated)", got)
	}
}

func TestPublishExplicitBind(t *testing.T) {
	bind := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), 0)
	if l, err := net.Listen("tcp", bind.String()); err != nil {
		t.Skipf("127.0.0.2 not bindable here: %v", err)
	} else {
		l.Close()
	}
	s, g := netstacktest.Connect(t, portsConfig(
		netstack.Port{HostAddr: bind, GuestPort: 8080},
		netstack.Port{Protocol: policy.UDP, HostAddr: bind, GuestPort: 8080},
	))
	guestEchoTCP(t, g, 8080)
	guestEchoUDP(t, g, 8080)
	pub := s.PublishedPorts()
	for _, p := range pub {
		if p.HostAddr.Addr() != bind.Addr() || p.HostAddr.Port() == 0 {
			t.Fatalf("PublishedPorts = %v", pub)
		}
	}
	if _, err := net.DialTimeout("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), pub[0].HostAddr.Port()).String(), time.Second); err == nil {
		// Something else may own that port on 127.0.0.1; only log.
		t.Logf("127.0.0.1:%d also accepted", pub[0].HostAddr.Port())
	}
	c := dialPublished(t, s, 0)
	defer c.Close()
	if err := echoRoundTrip(c, 64<<10); err != nil {
		t.Fatal(err)
	}
	uc, err := net.Dial("udp", pub[1].HostAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	ok := false
	buf := make([]byte, 16)
	for try := 0; try < 5 && !ok; try++ {
		uc.Write([]byte("u"))
		uc.SetReadDeadline(time.Now().Add(time.Second))
		n, err := uc.Read(buf)
		ok = err == nil && string(buf[:n]) == "echo:u"
	}
	if !ok {
		t.Fatal("no UDP echo via 127.0.0.2")
	}
}

func TestPublishFixedPortAndConflict(t *testing.T) {
	s, _ := netstacktest.Connect(t, portsConfig(netstack.Port{GuestPort: 1}))
	taken := s.PublishedPorts()[0].HostAddr
	// The same fixed host port again: Start must fail and release what it
	// bound first.
	cfg := portsConfig(netstack.Port{GuestPort: 2}, netstack.Port{HostAddr: taken, GuestPort: 3})
	cfg.WriteFrame = func([]byte) {}
	s2, err := netstack.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err == nil {
		s2.Close()
		t.Fatal("Start bound an address already in use")
	}
	s2.Close()
	if s2.PublishedPorts() != nil {
		t.Errorf("failed Start reports ports %v", s2.PublishedPorts())
	}
}

func TestPublishConfigErrors(t *testing.T) {
	for _, p := range []netstack.Port{
		{GuestPort: 0},
		{Protocol: policy.ICMPv4, GuestPort: 1},
	} {
		_, err := netstack.New(netstack.Config{WriteFrame: func([]byte) {}, Ports: []netstack.Port{p}})
		if !errors.Is(err, netstack.ErrConfig) {
			t.Errorf("%v: err = %v, want ErrConfig", p, err)
		}
	}
}

// TestPublishCloseJoins checks that Close ends every published-port
// goroutine and host socket, with connections and sessions still open.
func TestPublishCloseJoins(t *testing.T) {
	run := func(check bool) {
		g, err := netstacktest.NewGuest()
		if err != nil {
			t.Fatal(err)
		}
		cfg := portsConfig(
			netstack.Port{GuestPort: 8080},
			netstack.Port{Protocol: policy.UDP, GuestPort: 8080},
			netstack.Port{GuestPort: 8081}, // nobody listens
		)
		cfg.WriteFrame = g.DeliverFrame
		s, err := netstack.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		g.Start(s.DeliverFrame)
		stopTCP := guestEchoTCP(t, g, 8080)
		stopUDP := guestEchoUDP(t, g, 8080)
		pub := s.PublishedPorts()

		var open []net.Conn
		for range 3 {
			c := dialPublished(t, s, 0)
			open = append(open, c)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("ab"))
			if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
		}
		uc, err := net.Dial("udp", pub[1].HostAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, uc)
		for try := 0; try < 5; try++ {
			uc.Write([]byte("x"))
			uc.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := uc.Read(make([]byte, 16)); err == nil {
				break
			}
		}

		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return")
		}
		stopTCP()
		stopUDP()
		g.Close()
		if check {
			// Host connections were closed by the stack.
			for _, c := range open[:3] {
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
					t.Errorf("host connection still open after Close: %v", err)
				}
			}
			// The listeners are gone.
			if c, err := net.DialTimeout("tcp", pub[0].HostAddr.String(), time.Second); err == nil {
				c.Close()
				t.Errorf("%v still accepts after Close", pub[0].HostAddr)
			}
		}
		for _, c := range open {
			c.Close()
		}
	}
	run(false) // warm up lazily started runtime and gVisor goroutines
	base := runtime.NumGoroutine()
	run(true)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after Close, baseline %d\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
