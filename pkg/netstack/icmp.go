// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// pingQueue bounds the echo requests waiting for one session's host
// socket; more are dropped, as a congested link would.
const pingQueue = 16

// pingKey names one guest ping session: the guest's address, the
// destination and the guest's echo identifier.
type pingKey struct {
	src, dst netip.Addr
	ident    uint16
}

// pingSession is one guest ping session re-originated by a host PingConn.
type pingSession struct {
	key    pingKey
	target netip.Addr     // the address the host socket pings
	reqs   chan echoValue // from the packet path; never closed
}

// echoValue is one echo request or reply: sequence number and data.
type echoValue struct {
	seq  uint16
	data []byte
}

// handleICMP returns gVisor's default handler for ICMPv4 or ICMPv6
// packets that no endpoint claims. The network layer calls it for echo
// requests to any address (the NIC is promiscuous) and for a few other
// types; it runs in the packet path, so it only parses, decides and hands
// off. Returning true stops the network layer from answering the echo
// itself; false, for the gateway's own addresses, lets it.
func (s *Stack) handleICMP(v6 bool) func(stack.TransportEndpointID, *stack.PacketBuffer) bool {
	return func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		src, _ := netip.AddrFromSlice(id.RemoteAddress.AsSlice())
		dst, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
		if dst == Gateway4 || dst == Gateway6 {
			return false
		}
		v := stack.PayloadSince(pkt.TransportHeader())
		defer v.Release()
		b := v.AsSlice()
		if len(b) < icmpEchoHeaderLen || b[1] != 0 {
			return true
		}
		proto := policy.ICMPv4
		if v6 {
			// The IPv6 layer has checked the checksum.
			proto = policy.ICMPv6
			if b[0] != icmpv6EchoRequest {
				return true
			}
		} else if b[0] != icmpv4Echo || checksum.Checksum(b, 0) != 0xffff {
			// IPv4 hands echo requests with a bad checksum to raw
			// endpoints too; drop them.
			return true
		}
		k := pingKey{src: src, dst: dst, ident: binary.BigEndian.Uint16(b[4:])}
		s.echo(k, proto, echoValue{seq: binary.BigEndian.Uint16(b[6:]), data: bytes.Clone(b[icmpEchoHeaderLen:])})
		return true
	}
}

// echo queues one guest echo request on its session, starting the session
// after a policy check when there is none.
func (s *Stack) echo(k pingKey, proto policy.Protocol, req echoValue) {
	s.mu.Lock()
	ps, ok := s.pings[k]
	s.mu.Unlock()
	if ok {
		select {
		case ps.reqs <- req:
		default:
		}
		return
	}
	target, ok := s.egressTarget(proto, netip.AddrPortFrom(k.dst, 0))
	if !ok {
		s.stats.deniedFlows.Add(1)
		return
	}
	ps = &pingSession{key: k, target: target.Addr(), reqs: make(chan echoValue, pingQueue)}
	ps.reqs <- req
	s.mu.Lock()
	if _, dup := s.pings[k]; dup || s.closed || s.flows >= s.cfg.MaxFlows {
		s.mu.Unlock()
		if !dup {
			s.stats.refusedFlows.Add(1)
		}
		return
	}
	s.flows++
	s.wg.Add(1)
	s.pings[k] = ps
	s.mu.Unlock()
	go s.runPing(ps)
}

// runPing opens the session's host socket and relays echo requests to it
// until the session has been idle for PingIdleTimeout or the stack closes.
// A second goroutine relays the replies.
func (s *Stack) runPing(ps *pingSession) {
	defer s.endFlow()
	defer func() {
		s.mu.Lock()
		delete(s.pings, ps.key)
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	pc, err := s.cfg.Ping(ctx, ps.target)
	cancel()
	if err != nil {
		s.stats.refusedFlows.Add(1)
		return
	}
	untrack := s.track(pc)
	defer untrack()
	s.stats.icmpFlows.Add(1)
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pingReplies(ps, pc, &last)
	}()
	idle := s.cfg.PingIdleTimeout
	t := time.NewTimer(idle)
	defer t.Stop()
loop:
	for {
		select {
		case r := <-ps.reqs:
			last.Store(time.Now().UnixNano())
			if pc.WriteEcho(r.seq, r.data) == nil {
				s.stats.payloadFromGuest.Add(uint64(len(r.data)))
			}
		case <-t.C:
			left := idle - time.Since(time.Unix(0, last.Load()))
			if left <= 0 {
				break loop
			}
			t.Reset(left)
		case <-done:
			break loop
		case <-s.ctx.Done():
			break loop
		}
	}
	pc.Close()
	<-done
}

// pingReplies writes the host socket's echo replies to the guest until
// the socket fails or is closed.
func (s *Stack) pingReplies(ps *pingSession, pc PingConn, last *atomic.Int64) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		seq, n, err := pc.ReadEcho(buf)
		if err != nil {
			return
		}
		last.Store(time.Now().UnixNano())
		if s.writeEchoReply(ps.key, echoValue{seq: seq, data: buf[:n]}) {
			s.stats.payloadToGuest.Add(uint64(n))
		}
	}
}

// writeEchoReply sends the guest an echo reply from k.dst, built by the
// stack's network layer (which adds the IP header and fragments it).
func (s *Stack) writeEchoReply(k pingKey, rep echoValue) bool {
	netProto, transProto := ipv4.ProtocolNumber, header.ICMPv4ProtocolNumber
	if k.dst.Is6() {
		netProto, transProto = ipv6.ProtocolNumber, header.ICMPv6ProtocolNumber
	}
	local, remote := tcpip.AddrFromSlice(k.dst.AsSlice()), tcpip.AddrFromSlice(k.src.AsSlice())
	r, terr := s.ns.FindRoute(nicID, local, remote, netProto, false)
	if terr != nil {
		return false
	}
	defer r.Release()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()) + icmpEchoHeaderLen,
		Payload:            buffer.MakeWithData(rep.data),
	})
	defer pkt.DecRef()
	h := pkt.TransportHeader().Push(icmpEchoHeaderLen)
	pkt.TransportProtocolNumber = transProto
	binary.BigEndian.PutUint16(h[4:], k.ident)
	binary.BigEndian.PutUint16(h[6:], rep.seq)
	csum := checksum.Checksum(rep.data, 0)
	if k.dst.Is6() {
		h6 := header.ICMPv6(h)
		h6.SetType(header.ICMPv6EchoReply)
		h6.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: h6, Src: local, Dst: remote, PayloadCsum: csum, PayloadLen: len(rep.data),
		}))
	} else {
		h4 := header.ICMPv4(h)
		h4.SetType(header.ICMPv4EchoReply)
		h4.SetChecksum(header.ICMPv4Checksum(h4, csum))
	}
	return r.WritePacket(stack.NetworkHeaderParams{Protocol: transProto, TTL: r.DefaultTTL()}, pkt) == nil
}
