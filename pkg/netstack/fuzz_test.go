// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func fuzzStack(t testing.TB, start bool) *Stack {
	s, err := New(Config{
		WriteFrame: func([]byte) {},
		Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("fuzz: no dialing")
		},
		HostAddrs:  []netip.Addr{},
		DNSServers: []netip.AddrPort{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if start {
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	return s
}

// FuzzDNS feeds hostile bytes to both DNS parsers: the guest query path
// (parse, then answer locally) and the upstream reply path (filter and
// pin). Neither may panic, and every reply must itself parse.
func FuzzDNS(f *testing.F) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 1, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("a.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := q.Pack()
	f.Add(b, false)
	r := q
	r.Header.Response = true
	r.Answers = []dnsmessage.Resource{
		{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("a.example."), Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: 5}, Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("b.example.")}},
		{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("b.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5}, Body: &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}}},
		{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("a.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5}, Body: &dnsmessage.AResource{A: [4]byte{203, 0, 113, 1}}},
	}
	b2, _ := r.Pack()
	f.Add(b2, true)
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, false) // self-pointing name
	s := fuzzStack(f, false)
	res := &resolver{s: s}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		qr, rcode, ok := parseQuery(data, tcp)
		if ok {
			out := qr.reply(rcode, nil, nil)
			if out != nil {
				var m dnsmessage.Message
				if err := m.Unpack(out); err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
			}
		}
		var m dnsmessage.Message
		if m.Unpack(data) != nil || len(m.Questions) != 1 {
			return
		}
		qr = query{id: 1, q: m.Questions[0], name: m.Questions[0].Name.String(), maxSize: 512, questions: 1}
		answers, auth, rc := res.filter(qr, &m)
		if out := qr.reply(rc, answers, auth); out != nil {
			var m2 dnsmessage.Message
			if err := m2.Unpack(out); err != nil {
				t.Fatalf("filtered reply does not parse: %v", err)
			}
		}
		if n := s.pins.len(); n > s.cfg.MaxPins {
			t.Fatalf("pins = %d, over MaxPins %d", n, s.cfg.MaxPins)
		}
	})
}

// FuzzFrame delivers hostile Ethernet frames to a running stack. Nothing
// may panic and no flow may reach the host (Dial always fails here).
func FuzzFrame(f *testing.F) {
	// Seeds: an ARP request for the gateway, and truncated headers.
	arp := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0x6d, 0x73, 0, 0, 2, 0x08, 0x06,
		0, 1, 8, 0, 6, 4, 0, 1, 2, 0x6d, 0x73, 0, 0, 2, 100, 96, 0, 2, 0, 0, 0, 0, 0, 0, 100, 96, 0, 1,
	}
	f.Add(arp)
	f.Add(append(append([]byte{}, GatewayMAC[:]...), 2, 0x6d, 0x73, 0, 0, 2, 0x08, 0x00, 0x45, 0, 0, 20))
	f.Add(append(append([]byte{}, GatewayMAC[:]...), 2, 0x6d, 0x73, 0, 0, 2, 0x86, 0xdd, 0x60))
	s := fuzzStack(f, true)
	f.Fuzz(func(t *testing.T, frame []byte) {
		s.DeliverFrame(frame)
	})
}
