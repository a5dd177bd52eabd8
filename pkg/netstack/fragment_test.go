// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// frag is one IPv4 fragment: data at byte offset off of the IP payload.
type frag struct {
	off  int
	data []byte
	more bool // more fragments (MF)
}

// ipv4Frags turns an unfragmented IPv4 frame from rawFrame into one frame
// per fragment, with identification id and the original header otherwise.
// Offsets are divided by 8 as the header requires; a test that wants an
// odd offset gets it rounded down.
func ipv4Frags(frame []byte, id uint16, fs []frag) [][]byte {
	hdr := frame[:header.EthernetMinimumSize+header.IPv4MinimumSize]
	var out [][]byte
	for _, f := range fs {
		b := append(append([]byte(nil), hdr...), f.data...)
		ip := header.IPv4(b[header.EthernetMinimumSize:])
		ip.SetTotalLength(uint16(header.IPv4MinimumSize + len(f.data)))
		ip.SetID(id)
		var flags uint8
		if f.more {
			flags = header.IPv4FlagMoreFragments
		}
		ip.SetFlagsFragmentOffset(flags, uint16(f.off&^7))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		out = append(out, b)
	}
	return out
}

// l4Of returns the transport header and payload of a rawFrame frame.
func l4Of(frame []byte) []byte {
	return frame[header.EthernetMinimumSize+header.IPv4MinimumSize:]
}

// split cuts b at the given offsets into fragments, MF set on all but the
// last.
func split(b []byte, cuts ...int) []frag {
	var fs []frag
	prev := 0
	for _, c := range append(cuts, len(b)) {
		fs = append(fs, frag{off: prev, data: b[prev:c], more: c != len(b)})
		prev = c
	}
	return fs
}

// recorder is a host TCP listener and UDP socket on the same 127.0.0.1
// port that records every datagram and counts accepted connections.
type recorder struct {
	port  uint16
	tl    net.Listener
	uc    net.PacketConn
	mu    sync.Mutex
	grams [][]byte
	conns int
	wg    sync.WaitGroup
}

func startRecorder(t testing.TB) *recorder {
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
		r := &recorder{port: uint16(tl.Addr().(*net.TCPAddr).Port), tl: tl, uc: uc}
		r.wg.Add(2)
		go func() {
			defer r.wg.Done()
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				r.mu.Lock()
				r.conns++
				r.mu.Unlock()
				c.Close()
			}
		}()
		go func() {
			defer r.wg.Done()
			buf := make([]byte, 65536)
			for {
				n, _, err := uc.ReadFrom(buf)
				if err != nil {
					return
				}
				r.mu.Lock()
				r.grams = append(r.grams, bytes.Clone(buf[:n]))
				r.mu.Unlock()
			}
		}()
		t.Cleanup(func() { tl.Close(); uc.Close(); r.wg.Wait() })
		return r
	}
	t.Fatal("no free port pair")
	return nil
}

func (r *recorder) Grams() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.grams...)
}

// TestEscapeFragments sends hostile IPv4 fragment patterns: fragments to
// denied addresses and ports, tiny first fragments that split the TCP or
// UDP header, overlapping fragments that would rewrite the destination
// port, out-of-range and incomplete fragments. No denied flow may be
// dialled, nothing may panic, and legitimate fragmented datagrams to an
// allowed destination arrive whole.
func TestEscapeFragments(t *testing.T) {
	rec := startRecorder(t)
	okPort := rec.port
	badPort := okPort + 1
	if badPort == 0 {
		badPort = 1
	}
	// Public addresses on okPort only.
	pol := &policy.Policy{Rules: []policy.Rule{{
		Action: policy.Allow, Destination: policy.InGroup(policy.GroupPublic),
		Protocols: []policy.Protocol{policy.TCP, policy.UDP}, Ports: []policy.PortRange{policy.Port(okPort)},
	}}}
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{hostOwn}, DNSServers: []netip.AddrPort{}})
	public := netip.MustParseAddr("203.0.113.10")
	src := func(i int) netip.AddrPort { return netip.AddrPortFrom(netstack.Guest4, uint16(43000+i)) }
	id := uint16(1)
	send := func(frames [][]byte) {
		for _, f := range frames {
			s.DeliverFrame(f)
		}
		id++
	}
	payload := bytes.Repeat([]byte("fragmented-datagram/"), 150) // 3000 bytes

	// 1. A legitimate fragmented datagram, in order and reversed.
	f := rawFrame(header.UDPProtocolNumber, src(0), netip.AddrPortFrom(public, okPort), payload)
	send(ipv4Frags(f, id, split(l4Of(f), 1480, 2960)))
	fs := split(l4Of(f), 1000, 2000)
	send(ipv4Frags(f, id, []frag{fs[2], fs[1], fs[0]}))

	// 2. Fragments to denied addresses, TCP and UDP, with a tiny first
	// fragment holding only the ports.
	for i, d := range []string{"10.0.0.1", "127.0.0.1", "127.0.0.2", "169.254.169.254", "0.0.0.0", "100.96.0.3", hostOwn.String(), netstack.Gateway4.String()} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(d), okPort)
		for _, proto := range []tcpip.TransportProtocolNumber{header.TCPProtocolNumber, header.UDPProtocolNumber} {
			f := rawFrame(proto, src(10+i), dst, payload[:64])
			send(ipv4Frags(f, id, split(l4Of(f), 8)))
			send(ipv4Frags(f, id, split(l4Of(f), 8, 16, 24)))
		}
	}

	// 3. A denied port behind a tiny first fragment and behind overlaps
	// that rewrite the header: a first fragment naming okPort and a
	// second offset-0 fragment naming badPort, in both orders; and an
	// offset-8 fragment overlapping the TCP header.
	for i, proto := range []tcpip.TransportProtocolNumber{header.TCPProtocolNumber, header.UDPProtocolNumber} {
		good := rawFrame(proto, src(30+i), netip.AddrPortFrom(public, okPort), payload[:64])
		bad := rawFrame(proto, src(30+i), netip.AddrPortFrom(public, badPort), payload[:64])
		send(ipv4Frags(bad, id, split(l4Of(bad), 8)))
		lg, lb := l4Of(good), l4Of(bad)
		send(ipv4Frags(good, id, []frag{{0, lg[:24], true}, {0, lb[:32], true}, {32, lb[32:], false}}))
		send(ipv4Frags(good, id, []frag{{0, lb[:32], true}, {0, lg[:24], true}, {24, lg[24:], false}}))
		send(ipv4Frags(good, id, []frag{{0, lg[:16], true}, {8, lb[8:32], true}, {32, lb[32:], false}}))
		send(ipv4Frags(good, id, []frag{{16, lb[16:], false}, {0, lb[:8], true}, {8, lg[8:24], true}}))
	}

	// 4. Malformed: a fragment past 65535 bytes, an empty fragment, a
	// final fragment with MF clear overlapping an earlier end, a lone
	// middle fragment, and many incomplete datagrams.
	big := rawFrame(header.UDPProtocolNumber, src(40), netip.AddrPortFrom(public, okPort), payload[:64])
	send(ipv4Frags(big, id, []frag{{0, l4Of(big)[:16], true}, {65528, payload[:100], false}}))
	send(ipv4Frags(big, id, []frag{{0, nil, true}, {0, l4Of(big), false}}))
	send(ipv4Frags(big, id, []frag{{0, l4Of(big)[:32], false}, {16, l4Of(big)[16:], false}}))
	send(ipv4Frags(big, id, []frag{{800, payload[:64], true}}))
	for i := range 2000 {
		s.DeliverFrame(ipv4Frags(big, uint16(10000+i), []frag{{0, l4Of(big)[:16], true}})[0])
	}

	// 5. The guest's own stack fragments a 4000-byte datagram.
	c, err := g.DialUDP(netip.AddrPortFrom(public, okPort))
	if err != nil {
		t.Fatal(err)
	}
	own := bytes.Repeat([]byte("guest-stack-fragments/"), 180)
	if _, err := c.Write(own); err != nil {
		t.Fatal(err)
	}
	c.Close()

	deadline := time.Now().Add(3 * time.Second)
	for len(rec.Grams()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	allowed := map[string]bool{
		"udp " + netip.AddrPortFrom(public, okPort).String(): true,
		"tcp " + netip.AddrPortFrom(public, okPort).String(): true,
	}
	for _, d := range fn.Dials() {
		if !allowed[d] {
			t.Errorf("denied flow dialled: %s", d)
		}
	}
	whole := 0
	for _, gram := range rec.Grams() {
		switch {
		case bytes.Equal(gram, payload) || bytes.Equal(gram, own):
			whole++
		case len(gram) == 64 && bytes.Equal(gram, payload[:64]):
			// An overlap that the reassembler resolved to the okPort
			// header: allowed, and the data is the sender's.
		default:
			t.Errorf("host received a %d-byte datagram that no whole send produced: %q", len(gram), truncate(gram))
		}
	}
	if whole != 3 {
		t.Errorf("%d whole fragmented datagrams arrived, want 3", whole)
	}
	// The stack still works.
	if err := tryUDPRecorded(g, rec, netip.AddrPortFrom(public, okPort)); err != nil {
		t.Errorf("after the fragments: %v", err)
	}
	t.Logf("dials %v; stats %+v", fn.Dials(), s.Stats())
}

func tryUDPRecorded(g *netstacktest.Guest, rec *recorder, dst netip.AddrPort) error {
	c, err := g.DialUDP(dst)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte(fmt.Sprintf("control-%d", time.Now().UnixNano()))
	for range 20 {
		c.Write(msg)
		time.Sleep(50 * time.Millisecond)
		for _, gram := range rec.Grams() {
			if bytes.Equal(gram, msg) {
				return nil
			}
		}
	}
	return fmt.Errorf("control datagram never arrived")
}

func truncate(b []byte) string {
	s := string(b)
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// ipv6Frags turns an unfragmented IPv6 frame from rawFrame into one frame
// per fragment, each with a fragment header (RFC 8200 section 4.5).
func ipv6Frags(frame []byte, id uint32, fs []frag) [][]byte {
	const eth, ip6 = header.EthernetMinimumSize, header.IPv6MinimumSize
	next := header.IPv6(frame[eth:]).NextHeader()
	var out [][]byte
	for _, f := range fs {
		b := append([]byte(nil), frame[:eth+ip6]...)
		fh := make([]byte, 8)
		fh[0] = next
		off := uint16(f.off &^ 7)
		if f.more {
			off |= 1
		}
		fh[2], fh[3] = byte(off>>8), byte(off)
		fh[4], fh[5], fh[6], fh[7] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
		b = append(append(b, fh...), f.data...)
		h := header.IPv6(b[eth:])
		h.SetNextHeader(uint8(header.IPv6FragmentHeader))
		h.SetPayloadLength(uint16(8 + len(f.data)))
		out = append(out, b)
	}
	return out
}

// TestEscapeFragments6: the IPv6 counterpart, shorter, since IPv6
// reassembly drops every overlap (RFC 5722).
func TestEscapeFragments6(t *testing.T) {
	rec := startRecorder(t)
	okPort := rec.port
	badPort := okPort + 1
	pol := &policy.Policy{Rules: []policy.Rule{{
		Action: policy.Allow, Destination: policy.InGroup(policy.GroupPublic),
		Protocols: []policy.Protocol{policy.TCP, policy.UDP}, Ports: []policy.PortRange{policy.Port(okPort)},
	}}}
	fn := &fakeNet{}
	s, _ := netstacktest.Connect(t, netstack.Config{Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	public := netip.MustParseAddr("2001:db8::10")
	src := func(i int) netip.AddrPort { return netip.AddrPortFrom(netstack.Guest6, uint16(47000+i)) }
	id := uint32(1)
	send := func(frames [][]byte) {
		for _, f := range frames {
			s.DeliverFrame(f)
		}
		id++
	}
	payload := bytes.Repeat([]byte("fragmented-datagram6/"), 100) // 2100 bytes
	f := rawFrame(header.UDPProtocolNumber, src(0), netip.AddrPortFrom(public, okPort), payload)
	l4 := f[header.EthernetMinimumSize+header.IPv6MinimumSize:]
	fs := split(l4, 1000, 2000)
	send(ipv6Frags(f, id, []frag{fs[1], fs[2], fs[0]}))
	for i, d := range []string{"::1", "fd00:ec2::254", "fe80::1", "fd12::1", "::ffff:127.0.0.1"} {
		for _, proto := range []tcpip.TransportProtocolNumber{header.TCPProtocolNumber, header.UDPProtocolNumber} {
			f := rawFrame(proto, src(10+i), netip.AddrPortFrom(netip.MustParseAddr(d), okPort), payload[:64])
			l := f[header.EthernetMinimumSize+header.IPv6MinimumSize:]
			send(ipv6Frags(f, id, split(l, 8)))
		}
	}
	for i, proto := range []tcpip.TransportProtocolNumber{header.TCPProtocolNumber, header.UDPProtocolNumber} {
		good := rawFrame(proto, src(30+i), netip.AddrPortFrom(public, okPort), payload[:64])
		bad := rawFrame(proto, src(30+i), netip.AddrPortFrom(public, badPort), payload[:64])
		lg := good[header.EthernetMinimumSize+header.IPv6MinimumSize:]
		lb := bad[header.EthernetMinimumSize+header.IPv6MinimumSize:]
		send(ipv6Frags(bad, id, split(lb, 8)))
		send(ipv6Frags(good, id, []frag{{0, lg[:24], true}, {0, lb[:32], true}, {32, lb[32:], false}}))
		send(ipv6Frags(good, id, []frag{{16, lb[16:], false}, {0, lb[:8], true}, {8, lg[8:24], true}}))
	}
	send(ipv6Frags(f, id, []frag{{0, l4[:16], true}, {65528, payload[:100], false}}))
	deadline := time.Now().Add(3 * time.Second)
	for len(rec.Grams()) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	allowed := map[string]bool{
		"udp " + netip.AddrPortFrom(public, okPort).String(): true,
		"tcp " + netip.AddrPortFrom(public, okPort).String(): true,
	}
	for _, d := range fn.Dials() {
		if !allowed[d] {
			t.Errorf("denied flow dialled: %s", d)
		}
	}
	grams := rec.Grams()
	if len(grams) != 1 || !bytes.Equal(grams[0], payload) {
		t.Errorf("host received %d datagrams, want the one whole fragmented datagram", len(grams))
	}
}
