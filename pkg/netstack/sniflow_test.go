// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// tcpSink accepts on 127.0.0.1, writes banner (if any) to each
// connection and records what each one sends until EOF or 1 s of silence.
type tcpSink struct {
	port   uint16
	banner []byte
	mu     sync.Mutex
	got    [][]byte
}

func startSink(t testing.TB, banner []byte) *tcpSink {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &tcpSink{port: uint16(l.Addr().(*net.TCPAddr).Port), banner: banner}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if len(banner) > 0 {
					c.Write(banner)
				}
				c.SetReadDeadline(time.Now().Add(time.Second))
				b, _ := io.ReadAll(c)
				k.mu.Lock()
				k.got = append(k.got, b)
				k.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return k
}

func (k *tcpSink) Got() [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.got)
}

// tlsFromGuest connects from the guest to dst and starts a TLS handshake
// naming sni; it returns once the handshake fails or 1 s passes.
func tlsFromGuest(g *netstacktest.Guest, dst netip.AddrPort, sni string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := g.DialTCP(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(time.Second))
	return tc.Handshake()
}

// TestSNIDeny: a deny domain rule refuses a flow whose ClientHello names
// the denied domain although the address is allowed, before any of its
// bytes reach the host; other names, plain protocols and server-first
// protocols pass.
func TestSNIDeny(t *testing.T) {
	sink := startSink(t, nil)
	banner := startSink(t, []byte("SSH-2.0-host\r\n"))
	pol := &policy.Policy{Rules: append(policy.AllowDNS(),
		policy.Rule{Action: policy.Deny, Destination: policy.DomainSuffix("blocked.test")},
		policy.Rule{Action: policy.Allow, Destination: policy.InGroup(policy.GroupPublic)},
	)}
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	pub := netip.MustParseAddr("203.0.113.10")
	tlsFromGuest(g, netip.AddrPortFrom(pub, sink.port), "x.Blocked.test")
	tlsFromGuest(g, netip.AddrPortFrom(pub, sink.port), "good.test")
	if err := tryWriteTCP(g, netip.AddrPortFrom(pub, sink.port), []byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Errorf("plain TCP: %v", err)
	}
	// Server speaks first: the guest reads the banner without sending.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := g.DialTCP(ctx, netip.AddrPortFrom(pub, banner.port))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 14)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "SSH-2.0-host\r\n" {
		t.Errorf("banner = %q, %v", b, err)
	} else if el := time.Since(start); el > time.Second {
		t.Errorf("banner took %v", el)
	}
	c.Close()
	time.Sleep(1500 * time.Millisecond)
	var hellos, plain int
	for _, b := range sink.Got() {
		switch {
		case bytes.Contains(b, []byte("blocked.test")):
			t.Errorf("host received the denied ClientHello")
		case bytes.Contains(b, []byte("good.test")) && b[0] == 22:
			hellos++
		case bytes.HasPrefix(b, []byte("GET / ")):
			plain++
		}
	}
	if hellos != 1 || plain != 1 {
		t.Errorf("host received %d good ClientHellos and %d plain requests, want 1 and 1", hellos, plain)
	}
	if st := s.Stats(); st.SNIDenied != 1 {
		t.Errorf("SNIDenied = %d, want 1", st.SNIDenied)
	}
}

func tryWriteTCP(g *netstacktest.Guest, dst netip.AddrPort, msg []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := g.DialTCP(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(msg)
	return err
}

// TestSNIAllow: with a default-deny policy and an allow domain rule, a
// flow to an address the guest never resolved is let through by its SNI
// only when the name resolves (upstream) to that address.
func TestSNIAllow(t *testing.T) {
	sink := startSink(t, nil)
	f := startFakeDNS(t, map[string][]dnsmessage.Resource{
		"api.example.test.": {rr("api.example.test.", a4("203.0.113.30"))},
		"evil.test.":        {rr("evil.test.", a4("203.0.113.31"))},
	})
	pol := &policy.Policy{Rules: append(policy.AllowDNS(),
		policy.Rule{Action: policy.Allow, Destination: policy.Domain("api.example.test")},
	)}
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{f.addr}})
	good := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.30"), sink.port)
	other := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.31"), sink.port)
	tlsFromGuest(g, good, "api.example.test")
	tlsFromGuest(g, other, "api.example.test") // the name does not resolve there
	tlsFromGuest(g, other, "evil.test")        // no rule allows the name
	tryWriteTCP(g, other, []byte("GET / HTTP/1.0\r\n\r\n"))
	time.Sleep(1500 * time.Millisecond)
	want := []string{"tcp " + good.String()}
	if d := fn.Dials(); !slices.Equal(d, want) {
		t.Errorf("dials %v, want %v", d, want)
	}
	if got := sink.Got(); len(got) != 1 || !bytes.Contains(got[0], []byte("api.example.test")) {
		t.Errorf("host received %d connections, want the one ClientHello", len(got))
	}
	if st := s.Stats(); st.SNIAllowed != 1 {
		t.Errorf("SNIAllowed = %d, want 1; stats %+v", st.SNIAllowed, st)
	}
}

// TestSNISilentGuest: a guest that connects to a denied address and sends
// nothing holds its flow no longer than the peek timeout.
func TestSNISilentGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 5 s peek timeout")
	}
	pol := &policy.Policy{Rules: append(policy.AllowDNS(),
		policy.Rule{Action: policy.Allow, Destination: policy.Domain("api.example.test")},
	)}
	fn := &fakeNet{}
	_, g := netstacktest.Connect(t, netstack.Config{Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := g.DialTCP(ctx, netip.MustParseAddrPort("203.0.113.30:443"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || isTimeout(err) {
		t.Fatalf("read = %v, want a reset", err)
	}
	if el := time.Since(start); el > 7*time.Second {
		t.Errorf("reset after %v", el)
	}
	if d := fn.Dials(); len(d) != 0 {
		t.Errorf("dials %v", d)
	}
}
