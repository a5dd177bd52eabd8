// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// fakeDNS is an upstream resolver on 127.0.0.1 (UDP and TCP, same port)
// answering from a fixed zone.
type fakeDNS struct {
	addr  netip.AddrPort
	zone  map[string][]dnsmessage.Resource // by lower-case name with trailing dot
	mu    sync.Mutex
	asked []string
	uc    net.PacketConn
	tl    net.Listener
	wg    sync.WaitGroup
}

func rr(name string, body dnsmessage.ResourceBody) dnsmessage.Resource {
	var t dnsmessage.Type
	switch body.(type) {
	case *dnsmessage.AResource:
		t = dnsmessage.TypeA
	case *dnsmessage.AAAAResource:
		t = dnsmessage.TypeAAAA
	case *dnsmessage.CNAMEResource:
		t = dnsmessage.TypeCNAME
	}
	return dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: t, Class: dnsmessage.ClassINET, TTL: 300}, Body: body}
}

func a4(s string) *dnsmessage.AResource {
	return &dnsmessage.AResource{A: netip.MustParseAddr(s).As4()}
}
func a6(s string) *dnsmessage.AAAAResource {
	return &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(s).As16()}
}
func cname(s string) *dnsmessage.CNAMEResource {
	return &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(s)}
}

func startFakeDNS(t testing.TB, zone map[string][]dnsmessage.Resource) *fakeDNS {
	t.Helper()
	for range 20 {
		tl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		uc, err := net.ListenPacket("udp4", tl.Addr().String())
		if err != nil {
			tl.Close()
			continue
		}
		f := &fakeDNS{addr: netip.MustParseAddrPort(tl.Addr().String()), zone: zone, uc: uc, tl: tl}
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			buf := make([]byte, 65535)
			for {
				n, from, err := uc.ReadFrom(buf)
				if err != nil {
					return
				}
				if resp := f.answer(buf[:n]); resp != nil {
					uc.WriteTo(resp, from)
				}
			}
		}()
		go func() {
			defer f.wg.Done()
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err == nil {
					msg := make([]byte, binary.BigEndian.Uint16(l[:]))
					if _, err := io.ReadFull(c, msg); err == nil {
						if resp := f.answer(msg); resp != nil {
							c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(resp))))
							c.Write(resp)
						}
					}
				}
				c.Close()
			}
		}()
		t.Cleanup(func() { uc.Close(); tl.Close(); f.wg.Wait() })
		return f
	}
	t.Fatal("no port")
	return nil
}

func (f *fakeDNS) answer(msg []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(msg); err != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	name := strings.ToLower(q.Name.String())
	f.mu.Lock()
	f.asked = append(f.asked, name)
	f.mu.Unlock()
	resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.Header.ID, Response: true, RecursionAvailable: true}, Questions: m.Questions}
	recs, ok := f.zone[name]
	if !ok {
		resp.Header.RCode = dnsmessage.RCodeNameError
	}
	for _, r := range recs {
		if r.Header.Type == q.Type || r.Header.Type == dnsmessage.TypeCNAME {
			resp.Answers = append(resp.Answers, r)
		}
	}
	b, _ := resp.Pack()
	return b
}

func (f *fakeDNS) Asked(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.asked, name)
}

// lookup sends one query from the guest over UDP to server:53.
func lookup(t *testing.T, g *netstacktest.Guest, server netip.Addr, name string, qt dnsmessage.Type) (dnsmessage.RCode, []netip.Addr) {
	t.Helper()
	c, err := g.DialUDP(netip.AddrPortFrom(server, 53))
	if err != nil {
		t.Fatalf("dial dns: %v", err)
	}
	defer c.Close()
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: qt, Class: dnsmessage.ClassINET}}}
	b, _ := q.Pack()
	buf := make([]byte, 65535)
	for range 3 {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(b)
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatalf("lookup %s: bad reply: %v", name, err)
		}
		if m.Header.ID != 0x4242 || !m.Header.Response {
			t.Fatalf("lookup %s: reply header %+v", name, m.Header)
		}
		var out []netip.Addr
		for _, a := range m.Answers {
			switch r := a.Body.(type) {
			case *dnsmessage.AResource:
				out = append(out, netip.AddrFrom4(r.A))
			case *dnsmessage.AAAAResource:
				out = append(out, netip.AddrFrom16(r.AAAA))
			}
		}
		return m.Header.RCode, out
	}
	t.Fatalf("lookup %s: no reply", name)
	return 0, nil
}

var testZone = map[string][]dnsmessage.Resource{
	"good.test.":        {rr("good.test.", a4("203.0.113.20")), rr("good.test.", a6("2001:db8::20"))},
	"api.example.test.": {rr("api.example.test.", a4("203.0.113.30"))},
	"x.blocked.test.":   {rr("x.blocked.test.", a4("203.0.113.31"))},
	"rebind.test.":      {rr("rebind.test.", a4("10.0.0.5"))},
	"mixed.test.":       {rr("mixed.test.", a4("10.0.0.5")), rr("mixed.test.", a4("203.0.113.40"))},
	"loop.test.":        {rr("loop.test.", a4("127.0.0.1"))},
	"meta.test.":        {rr("meta.test.", a4("169.254.169.254")), rr("meta.test.", a6("fd00:ec2::254"))},
	"v6map.test.":       {rr("v6map.test.", a6("::ffff:127.0.0.1"))},
	"zero.test.":        {rr("zero.test.", a4("0.0.0.0"))},
	"2130706433.":       {rr("2130706433.", a4("127.0.0.1"))},
	"0177.0.0.1.":       {rr("0177.0.0.1.", a4("127.0.0.1"))},
	"0x7f.0.0.1.":       {rr("0x7f.0.0.1.", a4("127.0.0.1"))},
	"alias.test.": {rr("alias.test.", cname("edge.cdn.test.")), rr("edge.cdn.test.", a4("203.0.113.50")),
		rr("evil.test.", a4("203.0.113.51"))},
}

func dnsStack(t *testing.T, pol *policy.Policy) (*netstack.Stack, *netstacktest.Guest, *fakeDNS, *fakeNet, *echoServers) {
	f := startFakeDNS(t, testZone)
	fn := &fakeNet{}
	e := startEcho(t)
	s, g := netstacktest.Connect(t, netstack.Config{
		Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{f.addr},
	})
	return s, g, f, fn, e
}

func TestDNSPublicProfile(t *testing.T) {
	s, g, f, _, _ := dnsStack(t, nil)
	for _, tc := range []struct {
		name  string
		qt    dnsmessage.Type
		rcode dnsmessage.RCode
		want  []string
	}{
		{"good.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"203.0.113.20"}},
		{"good.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"2001:db8::20"}},
		{"nosuch.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"rebind.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"mixed.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"203.0.113.40"}},
		{"loop.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"meta.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"meta.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError, nil},
		{"v6map.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError, nil},
		{"zero.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"2130706433.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"0177.0.0.1.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"0x7f.0.0.1.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"alias.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"203.0.113.50"}},
		{netstack.HostName + ".", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{netstack.Gateway4.String()}},
		{"HOST.microsandbox.INTERNAL.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{netstack.Gateway6.String()}},
		{"other.microsandbox.internal.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
	} {
		rc, addrs := lookup(t, g, netstack.Gateway4, tc.name, tc.qt)
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if rc != tc.rcode || !slices.Equal(got, tc.want) {
			t.Errorf("lookup(%s, %v) = %v %v, want %v %v", tc.name, tc.qt, rc, got, tc.rcode, tc.want)
		}
	}
	if f.Asked("other.microsandbox.internal.") || f.Asked("host.microsandbox.internal.") {
		t.Errorf("internal names were forwarded upstream")
	}
	if st := s.Stats(); st.DNSRebinding == 0 || st.DNSQueries == 0 {
		t.Errorf("stats = %+v, want rebinding drops and queries counted", st)
	}
}

func TestDNSAllowAllKeepsPrivateAnswers(t *testing.T) {
	_, g, _, _, _ := dnsStack(t, policy.AllowAll())
	if rc, addrs := lookup(t, g, netstack.Gateway4, "rebind.test.", dnsmessage.TypeA); rc != 0 || len(addrs) != 1 {
		t.Errorf("lookup(rebind.test) under AllowAll = %v %v, want the private answer", rc, addrs)
	}
}

func TestDNSNoneRefused(t *testing.T) {
	_, g, f, _, _ := dnsStack(t, policy.None())
	c, err := g.DialUDP(netip.AddrPortFrom(netstack.Gateway4, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	q := dnsmessage.Message{Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("good.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := q.Pack()
	c.Write(b)
	if _, err := c.Read(make([]byte, 512)); err == nil {
		t.Errorf("DNS answered under policy None")
	}
	if f.Asked("good.test.") {
		t.Errorf("upstream asked under policy None")
	}
}

// Domain rules match only addresses the sandbox resolved through its DNS,
// and denied names never reach the upstream.
func TestDNSDomainRules(t *testing.T) {
	pol := &policy.Policy{Rules: append(policy.AllowDNS(),
		policy.Rule{Action: policy.Deny, Destination: policy.DomainSuffix(".blocked.test")},
		policy.Rule{Action: policy.Allow, Destination: policy.Domain("api.example.test"), Protocols: []policy.Protocol{policy.TCP}},
		policy.Rule{Action: policy.Allow, Destination: policy.DomainSuffix("cdn.test")},
	)}
	_, g, f, fn, e := dnsStack(t, pol)
	ctx := context.Background()
	api := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.30"), e.port)
	if err := tryTCP(ctx, g.DialTCP, api); err == nil {
		t.Errorf("connect to api.example.test's address before resolving it succeeded")
	}
	if rc, addrs := lookup(t, g, netstack.Gateway4, "api.example.test.", dnsmessage.TypeA); rc != 0 || len(addrs) != 1 {
		t.Fatalf("lookup(api.example.test) = %v %v", rc, addrs)
	}
	if err := tryTCP(ctx, g.DialTCP, api); err != nil {
		t.Errorf("connect to resolved api.example.test: %v", err)
	}
	if err := tryUDP(g.DialUDP, api, 1, 200*time.Millisecond); err == nil {
		t.Errorf("UDP to api.example.test allowed by a TCP-only rule")
	}
	// Through a CNAME chain: the suffix rule matches the chain's target.
	edge := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.50"), e.port)
	lookup(t, g, netstack.Gateway4, "alias.test.", dnsmessage.TypeA)
	if err := tryTCP(ctx, g.DialTCP, edge); err != nil {
		t.Errorf("connect to edge.cdn.test via alias.test: %v", err)
	}
	// An out-of-chain record in the same reply pins nothing.
	if err := tryTCP(ctx, g.DialTCP, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.51"), e.port)); err == nil {
		t.Errorf("out-of-chain record was pinned")
	}
	// Denied suffix: NXDOMAIN without asking upstream, through any DNS address.
	for _, srv := range []netip.Addr{netstack.Gateway4, netip.MustParseAddr("203.0.113.53"), netstack.Gateway6} {
		if rc, _ := lookup(t, g, srv, "x.blocked.test.", dnsmessage.TypeA); rc != dnsmessage.RCodeNameError {
			t.Errorf("lookup(x.blocked.test) via %v = %v, want NXDOMAIN", srv, rc)
		}
	}
	if f.Asked("x.blocked.test.") {
		t.Errorf("denied name forwarded upstream")
	}
	for _, d := range fn.Dials() {
		if strings.HasSuffix(d, ":53") {
			t.Errorf("DNS flow dialled on the host: %s", d)
		}
	}
}

func TestDNSOverTCP(t *testing.T) {
	_, g, _, _, _ := dnsStack(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := g.DialTCP(ctx, netip.AddrPortFrom(netstack.Gateway4, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, name := range []string{"good.test.", "rebind.test."} {
		q := dnsmessage.Message{Header: dnsmessage.Header{ID: 7}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		b, _ := q.Pack()
		c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatal(err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatal(err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatal(err)
		}
		wantRC := dnsmessage.RCodeSuccess
		if name == "rebind.test." {
			wantRC = dnsmessage.RCodeNameError
		}
		if m.Header.RCode != wantRC || m.Header.ID != 7 {
			t.Errorf("TCP lookup(%s) = %v id %d, want %v", name, m.Header.RCode, m.Header.ID, wantRC)
		}
	}
}
