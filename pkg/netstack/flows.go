// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// dnsPort is the DNS port (RFC 1035 section 4.2); flows to it go to the
// stack's own resolver whatever their destination address.
const dnsPort = 53

// copyBufSize bounds each direction of a spliced flow.
const copyBufSize = 64 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

func endpointAddrs(id stack.TransportEndpointID) (src, dst netip.AddrPort) {
	s, _ := netip.AddrFromSlice(id.RemoteAddress.AsSlice())
	d, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	return netip.AddrPortFrom(s, id.RemotePort), netip.AddrPortFrom(d, id.LocalPort)
}

// dnsAllowed reports whether the policy lets the guest reach the sandbox
// DNS over proto (it is the host group, port 53).
func (s *Stack) dnsAllowed(proto policy.Protocol) bool {
	f := policy.Flow{Direction: policy.Egress, Protocol: proto, Remote: netip.AddrPortFrom(Gateway4, dnsPort)}
	return s.cfg.Policy.Check(f, s.env()).Action == policy.Allow
}

// egressTarget decides a guest flow to dst and returns the host address to
// dial. Invalid, multicast and in-subnet destinations, and TCP or UDP port
// 0, are refused whatever the policy says; the gateway maps to the host's
// loopback. ICMP flows carry port 0.
func (s *Stack) egressTarget(proto policy.Protocol, dst netip.AddrPort) (netip.AddrPort, bool) {
	if !s.egressPossible(proto, dst) || !s.egressAllowed(proto, dst) {
		return netip.AddrPort{}, false
	}
	return hostTarget(dst), true
}

// egressPossible reports whether any policy could allow a flow to dst.
func (s *Stack) egressPossible(proto policy.Protocol, dst netip.AddrPort) bool {
	a := policy.Normalize(dst.Addr())
	g := policy.Classify(a, s.isHost)
	isICMP := proto == policy.ICMPv4 || proto == policy.ICMPv6
	if g == policy.GroupInvalid || g == policy.GroupMulticast || (dst.Port() == 0 && !isICMP) {
		return false
	}
	return !(Subnet4.Contains(a) || Subnet6.Contains(a)) || a == Gateway4 || a == Gateway6
}

// egressAllowed asks the policy about a flow to dst.
func (s *Stack) egressAllowed(proto policy.Protocol, dst netip.AddrPort) bool {
	return s.cfg.Policy.Check(egressFlow(proto, dst), s.env()).Action == policy.Allow
}

func egressFlow(proto policy.Protocol, dst netip.AddrPort) policy.Flow {
	return policy.Flow{Direction: policy.Egress, Protocol: proto, Remote: netip.AddrPortFrom(policy.Normalize(dst.Addr()), dst.Port())}
}

// hostTarget maps dst to the address the host dials: the gateway becomes
// the host's loopback.
func hostTarget(dst netip.AddrPort) netip.AddrPort {
	a := policy.Normalize(dst.Addr())
	switch a {
	case Gateway4:
		a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case Gateway6:
		a = netip.IPv6Loopback()
	}
	return netip.AddrPortFrom(a, dst.Port())
}

func (s *Stack) dial(network string, target netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	return s.cfg.Dial(ctx, network, target.String())
}

// handleTCP runs in a goroutine gVisor's forwarder starts for each new
// guest SYN. It decides, dials, completes the handshake and splices.
func (s *Stack) handleTCP(r *tcp.ForwarderRequest) {
	_, dst := endpointAddrs(r.ID())
	if !s.beginFlow() {
		s.stats.refusedFlows.Add(1)
		r.Complete(true)
		return
	}
	defer s.endFlow()

	if dst.Port() == dnsPort {
		if !s.dnsAllowed(policy.TCP) {
			s.stats.deniedFlows.Add(1)
			r.Complete(true)
			return
		}
		gc, _, err := s.accept(r)
		if err != nil {
			return
		}
		untrack := s.track(gc)
		defer untrack()
		s.dns.serveTCP(gc)
		gc.Close()
		return
	}

	if !s.egressPossible(policy.TCP, dst) {
		s.stats.deniedFlows.Add(1)
		r.Complete(true)
		return
	}
	allowed := s.egressAllowed(policy.TCP, dst)
	if allowDom, denyDom := s.cfg.Policy.DomainRules(egressFlow(policy.TCP, dst)); denyDom || (allowDom && !allowed) {
		s.handleTCPSNI(r, dst, allowed)
		return
	}
	if !allowed {
		s.stats.deniedFlows.Add(1)
		r.Complete(true)
		return
	}
	hc, err := s.dial("tcp", hostTarget(dst))
	if err != nil {
		s.stats.refusedFlows.Add(1)
		r.Complete(true)
		return
	}
	gc, _, err := s.accept(r)
	if err != nil {
		hc.Close()
		return
	}
	s.stats.tcpFlows.Add(1)
	s.splice(gc, hc, nil)
}

// accept completes the guest's handshake. The endpoint is returned so
// that a flow refused after the handshake can be reset (Abort).
func (s *Stack) accept(r *tcp.ForwarderRequest) (net.Conn, tcpip.Endpoint, error) {
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		return nil, nil, tcpipError("accept", terr)
	}
	r.Complete(false)
	return gonet.NewTCPConn(&wq, ep), ep, nil
}

// splice copies both ways until both directions end, half-closing as each
// side finishes, then closes both connections. If first is not nil the
// guest-to-host direction calls it before copying: it returns bytes
// already read from the guest, to send first, and false to end the flow
// (both connections are closed; the host-to-guest direction may have run
// meanwhile).
func (s *Stack) splice(guest, host net.Conn, first func() ([]byte, bool)) {
	untrack := s.track(guest, host)
	defer untrack()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.copyHalf(guest, host, &s.stats.payloadToGuest)
	}()
	ok := true
	if first != nil {
		var prefix []byte
		if prefix, ok = first(); ok && len(prefix) > 0 {
			if _, err := host.Write(prefix); err != nil {
				ok = false
			} else {
				s.stats.payloadFromGuest.Add(uint64(len(prefix)))
			}
		}
	}
	if ok {
		s.copyHalf(host, guest, &s.stats.payloadFromGuest)
	} else {
		guest.Close()
		host.Close()
	}
	<-done
	guest.Close()
	host.Close()
}

// copyHalf copies src to dst with one bounded buffer. At EOF it half-closes
// dst; on any error it closes both so the other direction ends too.
func (s *Stack) copyHalf(dst, src net.Conn, n *atomic.Uint64) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if _, werr := dst.Write(buf[:nr]); werr != nil {
				src.Close()
				dst.Close()
				return
			}
			n.Add(uint64(nr))
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
					return
				}
			}
			src.Close()
			dst.Close()
			return
		}
	}
}

// handleUDP runs inside gVisor's packet path for the first datagram of each
// new guest UDP session, so it only decides and hands off. Returning false
// makes gVisor answer ICMP port unreachable.
func (s *Stack) handleUDP(r *udp.ForwarderRequest) bool {
	_, dst := endpointAddrs(r.ID())
	var target netip.AddrPort
	isDNS := dst.Port() == dnsPort
	if isDNS {
		if !s.dnsAllowed(policy.UDP) {
			s.stats.deniedFlows.Add(1)
			return false
		}
	} else {
		var ok bool
		if target, ok = s.egressTarget(policy.UDP, dst); !ok {
			s.stats.deniedFlows.Add(1)
			return false
		}
	}
	if !s.beginFlow() {
		s.stats.refusedFlows.Add(1)
		return true // drop silently: the guest may retry later
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		s.endFlow()
		return true
	}
	gc := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer s.endFlow()
		untrack := s.track(gc)
		defer untrack()
		defer gc.Close()
		if isDNS {
			s.dns.serveUDP(gc)
			return
		}
		s.proxyUDP(gc, target)
	}()
	return true
}

// proxyUDP relays one guest UDP session through a connected host socket
// until UDPIdleTimeout passes with no datagram either way.
func (s *Stack) proxyUDP(gc net.Conn, target netip.AddrPort) {
	hc, err := s.dial("udp", target)
	if err != nil {
		s.stats.refusedFlows.Add(1)
		return
	}
	s.stats.udpFlows.Add(1)
	untrack := s.track(hc)
	defer untrack()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.relayUDP(gc, hc, &last, &s.stats.payloadToGuest)
	}()
	s.relayUDP(hc, gc, &last, &s.stats.payloadFromGuest)
	<-done
	hc.Close()
}

// relayUDP copies datagrams from src to dst; it ends both on error or when
// the session has been idle for UDPIdleTimeout.
func (s *Stack) relayUDP(dst, src net.Conn, last *atomic.Int64, n *atomic.Uint64) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	idle := s.cfg.UDPIdleTimeout
	for {
		src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		nr, err := src.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
			}
			src.Close()
			dst.Close()
			return
		}
		last.Store(time.Now().UnixNano())
		if _, err := dst.Write(buf[:nr]); err == nil {
			n.Add(uint64(nr))
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// compile-time check that gonet conns still satisfy what splice needs.
var _ interface{ CloseWrite() error } = (*gonet.TCPConn)(nil)
