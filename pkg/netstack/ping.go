// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/icmp"
)

// PingConn is the host side of one guest ping session: a socket that
// sends ICMP echo requests to one destination and reads the matching
// echo replies.
type PingConn interface {
	// WriteEcho sends one echo request carrying seq and data.
	WriteEcho(seq uint16, data []byte) error
	// ReadEcho waits for the next echo reply from the destination to this
	// session's requests, copies its data into buf (truncating) and
	// returns its sequence number and the number of bytes copied. It
	// fails once Close was called.
	ReadEcho(buf []byte) (seq uint16, n int, err error)
	// Close ends the session and unblocks ReadEcho.
	Close() error
}

// PingFunc opens a PingConn to dst, an IPv4 or IPv6 address; the context
// carries the dial timeout.
type PingFunc func(ctx context.Context, dst netip.Addr) (PingConn, error)

// ICMP message types (RFC 792, RFC 4443 section 4).
const (
	icmpv4EchoReply   = 0
	icmpv4Echo        = 8
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
	icmpEchoHeaderLen = 8 // type, code, checksum, identifier, sequence
)

// ListenPing is the default [PingFunc]. It opens an unprivileged ICMP
// "ping" socket (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), or the IPv6
// equivalent), which Linux allows to the groups in
// /proc/sys/net/ipv4/ping_group_range and macOS to everyone; the kernel
// picks the echo identifier and delivers only the replies that carry it.
// Where ping sockets are refused it falls back to a raw ICMP socket, which
// needs CAP_NET_RAW; each raw socket sees every ICMP message the host
// receives, so it picks a random identifier and drops the replies that do
// not match. It fails when neither socket can be opened.
func ListenPing(ctx context.Context, dst netip.Addr) (PingConn, error) {
	dst = dst.Unmap()
	if !dst.IsValid() || dst.Zone() != "" {
		return nil, fmt.Errorf("netstack: ping: bad destination %v", dst)
	}
	v6 := dst.Is6()
	dgram, raw, any := "udp4", "ip4:icmp", "0.0.0.0"
	if v6 {
		dgram, raw, any = "udp6", "ip6:ipv6-icmp", "::"
	}
	p := &hostPing{dst: dst, v6: v6}
	c, err := icmp.ListenPacket(dgram, any)
	if err == nil {
		p.c, p.to = c, &net.UDPAddr{IP: dst.AsSlice()}
		return p, nil
	}
	c, rerr := icmp.ListenPacket(raw, any)
	if rerr != nil {
		return nil, fmt.Errorf("netstack: ping: %w (raw socket: %w)", err, rerr)
	}
	var id [2]byte
	rand.Read(id[:])
	p.c, p.to, p.raw, p.ident = c, &net.IPAddr{IP: dst.AsSlice()}, true, binary.BigEndian.Uint16(id[:])
	return p, nil
}

// hostPing is ListenPing's PingConn.
type hostPing struct {
	c     *icmp.PacketConn
	to    net.Addr
	dst   netip.Addr
	v6    bool
	raw   bool   // a raw socket: filter replies by ident
	ident uint16 // raw only; a ping socket's kernel sets its own
	rb    []byte // ReadEcho's buffer; one reader at a time
}

func (p *hostPing) WriteEcho(seq uint16, data []byte) error {
	msg := make([]byte, icmpEchoHeaderLen+len(data))
	msg[0] = icmpv4Echo
	if p.v6 {
		msg[0] = icmpv6EchoRequest
	}
	binary.BigEndian.PutUint16(msg[4:], p.ident)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[icmpEchoHeaderLen:], data)
	if !p.v6 {
		// The kernel fills in the ICMPv6 checksum (it covers a pseudo
		// header), and a ping socket the ICMPv4 one; a raw IPv4 socket
		// needs it.
		binary.BigEndian.PutUint16(msg[2:], ^checksum16(msg, 0))
	}
	_, err := p.c.WriteTo(msg, p.to)
	return err
}

func (p *hostPing) ReadEcho(buf []byte) (uint16, int, error) {
	if p.rb == nil {
		p.rb = make([]byte, 64<<10)
	}
	rb := p.rb
	want := byte(icmpv4EchoReply)
	if p.v6 {
		want = icmpv6EchoReply
	}
	for {
		n, from, err := p.c.ReadFrom(rb)
		if err != nil {
			return 0, 0, err
		}
		if n < icmpEchoHeaderLen || rb[0] != want || rb[1] != 0 || addrOf(from) != p.dst {
			continue
		}
		if p.raw && binary.BigEndian.Uint16(rb[4:]) != p.ident {
			continue
		}
		return binary.BigEndian.Uint16(rb[6:]), copy(buf, rb[icmpEchoHeaderLen:n]), nil
	}
}

func (p *hostPing) Close() error { return p.c.Close() }

func addrOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.IPAddr:
		ip = a.IP
	}
	out, _ := netip.AddrFromSlice(ip)
	return out.Unmap()
}

// checksum16 is the Internet checksum (RFC 1071) of b, folded into initial.
func checksum16(b []byte, initial uint16) uint16 {
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
