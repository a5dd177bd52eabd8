// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// fakePing is a host whose every ping socket answers its own requests;
// it records the destinations and counts open sockets.
type fakePing struct {
	mu     sync.Mutex
	dsts   []netip.Addr
	open   int
	silent bool // never answer
}

func (f *fakePing) Ping(_ context.Context, dst netip.Addr) (netstack.PingConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dsts = append(f.dsts, dst)
	f.open++
	return &fakePingConn{f: f, replies: make(chan [2][]byte, 64), done: make(chan struct{})}, nil
}

func (f *fakePing) Dsts() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dsts)
}

func (f *fakePing) Open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

type fakePingConn struct {
	f       *fakePing
	replies chan [2][]byte
	done    chan struct{}
	once    sync.Once
}

func (c *fakePingConn) WriteEcho(seq uint16, data []byte) error {
	c.f.mu.Lock()
	silent := c.f.silent
	c.f.mu.Unlock()
	if silent {
		return nil
	}
	select {
	case c.replies <- [2][]byte{{byte(seq >> 8), byte(seq)}, bytes.Clone(data)}:
	default:
	}
	return nil
}

func (c *fakePingConn) ReadEcho(buf []byte) (uint16, int, error) {
	select {
	case r := <-c.replies:
		return uint16(r[0][0])<<8 | uint16(r[0][1]), copy(buf, r[1]), nil
	case <-c.done:
		return 0, 0, errors.New("closed")
	}
}

func (c *fakePingConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.f.mu.Lock()
		c.f.open--
		c.f.mu.Unlock()
	})
	return nil
}

func ping(g *netstacktest.Guest, dst netip.Addr, seq uint16, data []byte, wait time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return g.Ping(ctx, dst, seq, data)
}

// TestPing: echoes to allowed destinations are re-originated and the
// replies come back; denied, invalid and in-subnet destinations get none
// and open no host socket; the gateway answers itself.
func TestPing(t *testing.T) {
	fp := &fakePing{}
	s, g := netstacktest.Connect(t, netstack.Config{Ping: fp.Ping, HostAddrs: []netip.Addr{hostOwn}, DNSServers: []netip.AddrPort{}})
	big := bytes.Repeat([]byte("0123456789abcdef"), 250) // 4000 bytes: fragmented both ways
	for i, d := range []string{"203.0.113.10", "2001:db8::10"} {
		dst := netip.MustParseAddr(d)
		for _, data := range [][]byte{[]byte("hello"), big} {
			got, err := ping(g, dst, uint16(i+1), data, 3*time.Second)
			if err != nil {
				t.Fatalf("ping %s (%d bytes): %v", d, len(data), err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("ping %s: reply data %d bytes, want %d", d, len(got), len(data))
			}
		}
	}
	for _, gw := range []netip.Addr{netstack.Gateway4, netstack.Gateway6} {
		if _, err := ping(g, gw, 7, []byte("gw"), 3*time.Second); err != nil {
			t.Errorf("ping gateway %v: %v", gw, err)
		}
	}
	for _, d := range []string{
		"10.0.0.1", "127.0.0.1", "127.0.0.2", "169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255",
		"100.96.0.3", hostOwn.String(), "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1", "fd42:6d73:62::3",
	} {
		if _, err := ping(g, netip.MustParseAddr(d), 9, []byte("x"), 300*time.Millisecond); err == nil {
			t.Errorf("ping %s answered", d)
		}
	}
	// Each Guest.Ping opens a new guest socket: a new identifier, so a
	// new session.
	want := []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8::10")}
	got := fp.Dsts()
	slices.SortFunc(got, netip.Addr.Compare)
	if got = slices.Compact(got); !slices.Equal(got, want) {
		t.Errorf("host pings to %v, want %v", got, want)
	}
	if st := s.Stats(); st.ICMPFlows != 4 || st.DeniedFlows == 0 {
		t.Errorf("stats = %+v, want 4 ICMP flows and some denied", st)
	}
}

// TestPingPolicy: ICMP rules by protocol, and rules with ports never
// match ICMP.
func TestPingPolicy(t *testing.T) {
	pol := &policy.Policy{Rules: []policy.Rule{
		{Action: policy.Allow, Destination: policy.AnyDest(), Ports: []policy.PortRange{policy.Port(0)}},
		{Action: policy.Allow, Destination: policy.InGroup(policy.GroupPrivate), Protocols: []policy.Protocol{policy.ICMPv4}},
	}}
	fp := &fakePing{}
	_, g := netstacktest.Connect(t, netstack.Config{Policy: pol, Ping: fp.Ping, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	if _, err := ping(g, netip.MustParseAddr("10.1.2.3"), 1, []byte("a"), 3*time.Second); err != nil {
		t.Errorf("ping private with an icmpv4 rule: %v", err)
	}
	for _, d := range []string{"203.0.113.10", "fd12::1"} {
		if _, err := ping(g, netip.MustParseAddr(d), 1, []byte("a"), 300*time.Millisecond); err == nil {
			t.Errorf("ping %s answered", d)
		}
	}
}

// TestPingLimits: sessions count towards MaxFlows, end after
// PingIdleTimeout, and Close joins them.
func TestPingLimits(t *testing.T) {
	runtime.GC()
	baseG := runtime.NumGoroutine()
	fp := &fakePing{}
	g, err := netstacktest.NewGuest()
	if err != nil {
		t.Fatal(err)
	}
	s, err := netstack.New(netstack.Config{
		WriteFrame: g.DeliverFrame, Ping: fp.Ping, MaxFlows: 2, PingIdleTimeout: 300 * time.Millisecond,
		HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	g.Start(s.DeliverFrame)
	// Each Guest.Ping uses a new guest socket, so a new identifier and a
	// new session; a silent host keeps the sessions open until idle.
	fp.silent = true
	for i := range 3 {
		ping(g, netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}), 1, []byte("a"), 100*time.Millisecond)
	}
	if n := len(fp.Dsts()); n != 2 {
		t.Errorf("%d host sockets with MaxFlows 2", n)
	}
	if st := s.Stats(); st.RefusedFlows != 1 {
		t.Errorf("RefusedFlows = %d, want 1", st.RefusedFlows)
	}
	deadline := time.Now().Add(5 * time.Second)
	for fp.Open() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d ping sockets still open after the idle timeout", fp.Open())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fp.mu.Lock()
	fp.silent = false
	fp.mu.Unlock()
	if _, err := ping(g, netip.MustParseAddr("203.0.113.20"), 1, []byte("a"), 3*time.Second); err != nil {
		t.Errorf("ping after idle sessions ended: %v", err)
	}
	g.Close()
	s.Close()
	if fp.Open() != 0 {
		t.Errorf("%d ping sockets open after Close", fp.Open())
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		runtime.GC()
		if n := runtime.NumGoroutine(); n <= baseG+2 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("goroutines %d, baseline %d", n, baseG)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPingHost pings one of the host's own addresses through the stack
// with the default ListenPing (a ping socket, or a raw socket as root).
// The guest cannot name loopback (its stack drops martians), and the
// host's kernel answers for its own addresses without leaving it.
func TestPingHost(t *testing.T) {
	var lo netip.Addr
	as, _ := net.InterfaceAddrs()
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			lo = p.Addr()
			break
		}
	}
	if !lo.IsValid() {
		t.Skip("no non-loopback IPv4 address")
	}
	pc, err := netstack.ListenPing(context.Background(), lo)
	if err != nil {
		t.Skipf("no ping or raw ICMP socket here: %v", err)
	}
	pc.Close()
	_, g := netstacktest.Connect(t, netstack.Config{Policy: policy.AllowAll(), HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	for seq := uint16(1); seq <= 3; seq++ {
		got, err := ping(g, lo, seq, []byte("through the host"), 3*time.Second)
		if err != nil {
			t.Fatalf("ping %v seq %d: %v", lo, seq, err)
		}
		if string(got) != "through the host" {
			t.Fatalf("reply data %q", got)
		}
	}
}
