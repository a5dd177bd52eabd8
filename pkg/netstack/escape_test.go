// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// rawFrame builds an Ethernet frame from the guest carrying a TCP SYN or a
// UDP datagram with a valid checksum; src and dst may be any addresses a
// hostile guest picks, including ones its own stack would never send.
func rawFrame(proto tcpip.TransportProtocolNumber, src, dst netip.AddrPort, payload []byte) []byte {
	th := header.TCPMinimumSize
	if proto == header.UDPProtocolNumber {
		th = header.UDPMinimumSize
	}
	v6 := dst.Addr().Is6()
	ih := header.IPv4MinimumSize
	etype := header.IPv4ProtocolNumber
	if v6 {
		ih, etype = header.IPv6MinimumSize, header.IPv6ProtocolNumber
	}
	b := make([]byte, header.EthernetMinimumSize+ih+th+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(netstacktest.GuestMAC[:]), DstAddr: tcpip.LinkAddress(netstack.GatewayMAC[:]), Type: etype,
	})
	sa, da := tcpip.AddrFromSlice(src.Addr().AsSlice()), tcpip.AddrFromSlice(dst.Addr().AsSlice())
	ip := b[header.EthernetMinimumSize:]
	l4 := ip[ih:]
	copy(l4[th:], payload)
	if v6 {
		header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(th + len(payload)), TransportProtocol: proto, HopLimit: 64, SrcAddr: sa, DstAddr: da})
	} else {
		h := header.IPv4(ip)
		h.Encode(&header.IPv4Fields{TotalLength: uint16(ih + th + len(payload)), TTL: 64, Protocol: uint8(proto), SrcAddr: sa, DstAddr: da})
		h.SetChecksum(^h.CalculateChecksum())
	}
	xsum := header.PseudoHeaderChecksum(proto, sa, da, uint16(th+len(payload)))
	xsum = checksum(payload, xsum)
	if proto == header.TCPProtocolNumber {
		t := header.TCP(l4)
		t.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
		t.SetChecksum(^t.CalculateChecksum(xsum))
	} else {
		u := header.UDP(l4)
		u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(th + len(payload))})
		u.SetChecksum(^u.CalculateChecksum(xsum))
	}
	return b
}

func checksum(b []byte, initial uint16) uint16 {
	sum := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// TestEscape throws forbidden destinations at the default profile, both
// through the guest stack and as hand-made frames, and checks that no host
// socket is dialled and no upstream resolver is reached except through the
// filtering DNS.
func TestEscape(t *testing.T) {
	f := startFakeDNS(t, testZone)
	e := startEcho(t)
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Dial: fn.Dial, HostAddrs: []netip.Addr{hostOwn}, DNSServers: []netip.AddrPort{f.addr}})
	port := e.port
	dests := []string{
		"127.0.0.1", "127.0.0.2", "127.1.2.3", "0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1",
		"169.254.169.254", "10.0.0.1", "100.100.100.200", "198.51.100.7", "240.0.0.1",
		"::1", "::", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::127.0.0.1",
		"fd00:ec2::254", "fe80::1", "ff02::1", "64:ff9b::7f00:1", "2002:a9fe:a9fe::1",
		netstack.Gateway4.String(), netstack.Gateway6.String(), "100.96.0.3",
	}
	guest4 := netip.AddrPortFrom(netstack.Guest4, 40000)
	guest6 := netip.AddrPortFrom(netstack.Guest6, 40000)
	for i, d := range dests {
		dst := netip.MustParseAddr(d)
		src := guest4
		if dst.Is6() {
			src = guest6
		}
		src = netip.AddrPortFrom(src.Addr(), uint16(40000+i))
		for _, proto := range []tcpip.TransportProtocolNumber{header.TCPProtocolNumber, header.UDPProtocolNumber} {
			s.DeliverFrame(rawFrame(proto, src, netip.AddrPortFrom(dst, port), []byte("ping")))
			// The host resolver's own address and port, bypassing port 53.
			s.DeliverFrame(rawFrame(proto, src, netip.AddrPortFrom(dst, f.addr.Port()), []byte("ping")))
		}
		// Through the guest's own stack, where it will route the address.
		if dst.Is4() || !dst.Is4In6() {
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			if err := tryTCP(ctx, g.DialTCP, netip.AddrPortFrom(dst, port)); err == nil {
				t.Errorf("guest TCP to %s:%d succeeded", d, port)
			}
		}
	}
	// The resolver's real address from the guest: loopback, denied.
	if err := tryUDP(g.DialUDP, f.addr, 1, 300*time.Millisecond); err == nil {
		t.Errorf("guest UDP to the host resolver %v succeeded", f.addr)
	}
	// Numeric names resolve only through the filtering DNS and are not
	// parsed as addresses.
	for _, n := range []string{"2130706433.", "0177.0.0.1.", "0x7f.0.0.1."} {
		if rc, _ := lookup(t, g, netstack.Gateway4, n, dnsmessage.TypeA); rc != dnsmessage.RCodeNameError {
			t.Errorf("lookup(%s) = %v, want NXDOMAIN", n, rc)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if d := fn.Dials(); len(d) != 0 {
		t.Errorf("host sockets dialled: %v", d)
	}
	for _, n := range []string{"ping"} {
		if f.Asked(n) {
			t.Errorf("upstream reached directly")
		}
	}
	st := s.Stats()
	if st.TCPFlows != 0 || st.UDPFlows != 0 {
		t.Errorf("stats = %+v, want no relayed flow", st)
	}
	// The gateway's DNS port is the one open gateway port.
	if err := tryTCP(context.Background(), g.DialTCP, netip.AddrPortFrom(netstack.Gateway4, 22)); err == nil {
		t.Errorf("gateway port 22 reachable")
	}
}

// TestEscapeAllowAllStillRefusesInvalid: even AllowAll never dials
// unspecified, multicast or in-subnet addresses.
func TestEscapeAllowAllStillRefusesInvalid(t *testing.T) {
	e := startEcho(t)
	fn := &fakeNet{}
	s, _ := netstacktest.Connect(t, netstack.Config{Policy: policy.AllowAll(), Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	for i, d := range []string{"0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0", "255.255.255.255", "224.0.0.1", "ff02::1", "100.96.0.3", "240.0.0.1"} {
		dst := netip.MustParseAddr(d)
		src := netip.AddrPortFrom(netstack.Guest4, uint16(41000+i))
		if dst.Is6() {
			src = netip.AddrPortFrom(netstack.Guest6, uint16(41000+i))
		}
		for _, proto := range []tcpip.TransportProtocolNumber{header.TCPProtocolNumber, header.UDPProtocolNumber} {
			s.DeliverFrame(rawFrame(proto, src, netip.AddrPortFrom(dst, e.port), []byte("ping")))
		}
	}
	// Positive control: the same kind of frame to a public address is relayed.
	s.DeliverFrame(rawFrame(header.UDPProtocolNumber, netip.AddrPortFrom(netstack.Guest4, 42000), netip.AddrPortFrom(netip.MustParseAddr("203.0.113.10"), e.port), []byte("ping")))
	time.Sleep(300 * time.Millisecond)
	want := "udp " + netip.AddrPortFrom(netip.MustParseAddr("203.0.113.10"), e.port).String()
	if d := fn.Dials(); !slices.Equal(d, []string{want}) {
		t.Errorf("host sockets dialled: %v, want only %v", d, want)
	}
}

// rawEcho builds an Ethernet frame from the guest carrying an ICMP echo
// request (ICMPv6 for an IPv6 dst) with a valid checksum unless bad.
func rawEcho(src, dst netip.Addr, ident, seq uint16, data []byte, bad bool) []byte {
	v6 := dst.Is6()
	ih, etype := header.IPv4MinimumSize, header.IPv4ProtocolNumber
	if v6 {
		ih, etype = header.IPv6MinimumSize, header.IPv6ProtocolNumber
	}
	b := make([]byte, header.EthernetMinimumSize+ih+header.ICMPv4MinimumSize+len(data))
	header.Ethernet(b).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(netstacktest.GuestMAC[:]), DstAddr: tcpip.LinkAddress(netstack.GatewayMAC[:]), Type: etype,
	})
	sa, da := tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice())
	ip := b[header.EthernetMinimumSize:]
	l4 := ip[ih:]
	copy(l4[header.ICMPv4MinimumSize:], data)
	if v6 {
		header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(len(l4)), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64, SrcAddr: sa, DstAddr: da})
		h := header.ICMPv6(l4)
		h.SetType(header.ICMPv6EchoRequest)
		h.SetIdent(ident)
		h.SetSequence(seq)
		h.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: h, Src: sa, Dst: da, PayloadCsum: checksum(data, 0), PayloadLen: len(data)}))
	} else {
		h4 := header.IPv4(ip)
		h4.Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber), SrcAddr: sa, DstAddr: da})
		h4.SetChecksum(^h4.CalculateChecksum())
		h := header.ICMPv4(l4)
		h.SetType(header.ICMPv4Echo)
		h.SetIdent(ident)
		h.SetSequence(seq)
		h.SetChecksum(^checksum(l4, 0))
	}
	if bad {
		l4[2] ^= 0xff
	}
	return b
}

// TestEscapeICMP: hand-made echo requests to every forbidden destination,
// and one with a bad checksum to an allowed one, open no host ping socket.
func TestEscapeICMP(t *testing.T) {
	fp := &fakePing{}
	s, _ := netstacktest.Connect(t, netstack.Config{Ping: fp.Ping, HostAddrs: []netip.Addr{hostOwn}, DNSServers: []netip.AddrPort{}})
	for i, d := range []string{
		"127.0.0.1", "127.0.0.2", "0.0.0.0", "255.255.255.255", "224.0.0.1", "169.254.169.254", "10.0.0.1",
		"100.100.100.200", hostOwn.String(), "100.96.0.3", "240.0.0.1",
		"::1", "::", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "fd00:ec2::254", "fe80::1", "ff02::1",
		"64:ff9b::7f00:1", "2002:a9fe:a9fe::1", "::127.0.0.1", "fd42:6d73:62::3",
	} {
		dst := netip.MustParseAddr(d)
		src := netstack.Guest4
		if dst.Is6() {
			src = netstack.Guest6
		}
		s.DeliverFrame(rawEcho(src, dst, uint16(i), 1, []byte("ping"), false))
	}
	s.DeliverFrame(rawEcho(netstack.Guest4, netip.MustParseAddr("203.0.113.10"), 99, 1, []byte("ping"), true))
	time.Sleep(300 * time.Millisecond)
	if d := fp.Dsts(); len(d) != 0 {
		t.Errorf("host pinged %v", d)
	}
	// Positive control: the same frame with a good checksum is relayed.
	s.DeliverFrame(rawEcho(netstack.Guest4, netip.MustParseAddr("203.0.113.10"), 99, 1, []byte("ping"), false))
	for deadline := time.Now().Add(3 * time.Second); len(fp.Dsts()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("a valid echo to a public address was not relayed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEscapeGatewayPorts: with the host group open on one TCP port only,
// the gateway reaches the host's loopback on that port and on no other,
// TCP or UDP, IPv4 or IPv6; port 53 is always the sandbox DNS.
func TestEscapeGatewayPorts(t *testing.T) {
	e := startEcho(t)
	other := startEcho(t)
	pol := &policy.Policy{Rules: []policy.Rule{
		{Action: policy.Allow, Destination: policy.InGroup(policy.GroupHost), Protocols: []policy.Protocol{policy.TCP}, Ports: []policy.PortRange{policy.Port(e.port)}},
	}, DefaultEgress: policy.Deny}
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{hostOwn}, DNSServers: []netip.AddrPort{}})
	if err := tryTCP(context.Background(), g.DialTCP, netip.AddrPortFrom(netstack.Gateway4, e.port)); err != nil {
		t.Fatalf("gateway TCP to the allowed port: %v", err)
	}
	for i, port := range []uint16{other.port, 22, 80, 443, 2375, 5432, 6443, 8080, 53} {
		for j, gw := range []netip.Addr{netstack.Gateway4, netstack.Gateway6} {
			src := netstack.Guest4
			if gw.Is6() {
				src = netstack.Guest6
			}
			sp := netip.AddrPortFrom(src, uint16(44000+i*2+j))
			s.DeliverFrame(rawFrame(header.UDPProtocolNumber, sp, netip.AddrPortFrom(gw, port), []byte("ping")))
			if port != 53 {
				s.DeliverFrame(rawFrame(header.TCPProtocolNumber, sp, netip.AddrPortFrom(gw, port), nil))
			}
		}
		// UDP to the allowed TCP port stays closed.
		s.DeliverFrame(rawFrame(header.UDPProtocolNumber, netip.AddrPortFrom(netstack.Guest4, 45000), netip.AddrPortFrom(netstack.Gateway4, e.port), []byte("ping")))
	}
	time.Sleep(300 * time.Millisecond)
	want := "tcp " + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.port).String()
	if d := fn.Dials(); !slices.Equal(d, []string{want}) {
		t.Errorf("host sockets dialled: %v, want only %v", d, want)
	}
}

// TestEscapeNumericAnswers: upstream answers whose CNAME targets are
// decimal, octal or hexadecimal spellings of loopback are never parsed as
// addresses, and their loopback A records are dropped even when a domain
// rule allows the whole chain.
func TestEscapeNumericAnswers(t *testing.T) {
	zone := map[string][]dnsmessage.Resource{
		"dec.test.":  {rr("dec.test.", cname("2130706433.")), rr("2130706433.", a4("127.0.0.1"))},
		"oct.test.":  {rr("oct.test.", cname("0177.0.0.1.")), rr("0177.0.0.1.", a4("127.0.0.1"))},
		"hex.test.":  {rr("hex.test.", cname("0x7f000001."))},
		"bare.test.": {rr("bare.test.", cname("127.0.0.1."))},
	}
	f := startFakeDNS(t, zone)
	pol := &policy.Policy{Rules: append(policy.AllowDNS(),
		policy.Rule{Action: policy.Allow, Destination: policy.DomainSuffix("test")},
		policy.Rule{Action: policy.Allow, Destination: policy.Domain("2130706433")},
		policy.Rule{Action: policy.Allow, Destination: policy.Domain("0177.0.0.1")},
		policy.Rule{Action: policy.Allow, Destination: policy.InGroup(policy.GroupPublic)},
	)}
	e := startEcho(t)
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Policy: pol, Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{f.addr}})
	for _, n := range []string{"dec.test.", "oct.test.", "hex.test.", "bare.test."} {
		_, addrs := lookup(t, g, netstack.Gateway4, n, dnsmessage.TypeA)
		if len(addrs) != 0 {
			t.Errorf("lookup(%s) = %v, want no address", n, addrs)
		}
	}
	for i, d := range []string{"127.0.0.1", "0.0.0.0"} {
		s.DeliverFrame(rawFrame(header.TCPProtocolNumber, netip.AddrPortFrom(netstack.Guest4, uint16(46000+i)), netip.AddrPortFrom(netip.MustParseAddr(d), e.port), nil))
	}
	time.Sleep(300 * time.Millisecond)
	if d := fn.Dials(); len(d) != 0 {
		t.Errorf("host sockets dialled: %v", d)
	}
}
