// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// Port publishes one guest port on the host (upstream's port binding):
// every TCP connection accepted on HostAddr, or every UDP peer sending to
// it, is forwarded to Guest4:GuestPort through the stack.
type Port struct {
	// Protocol is policy.TCP or policy.UDP. Zero: policy.TCP.
	Protocol policy.Protocol
	// HostAddr is where the host socket is bound. A zero (invalid) address
	// means 127.0.0.1, upstream's default; 0.0.0.0 means every IPv4
	// interface. Port 0 picks a free port: read it back with
	// [Stack.PublishedPorts].
	HostAddr netip.AddrPort
	// GuestPort is the guest's port. Required (non-zero).
	GuestPort uint16
}

func (p Port) String() string {
	proto := p.Protocol
	if proto == 0 {
		proto = policy.TCP
	}
	return fmt.Sprintf("%s %s->%d", proto, p.HostAddr, p.GuestPort)
}

// validatePorts checks Config.Ports for New.
func validatePorts(ps []Port) error {
	for _, p := range ps {
		if p.Protocol != 0 && p.Protocol != policy.TCP && p.Protocol != policy.UDP {
			return fmt.Errorf("%w: port %s: protocol must be tcp or udp", ErrConfig, p)
		}
		if p.GuestPort == 0 {
			return fmt.Errorf("%w: port %s: guest port is 0", ErrConfig, p)
		}
		if a := p.HostAddr.Addr(); a.IsValid() && a.Zone() != "" {
			return fmt.Errorf("%w: port %s: zoned host address", ErrConfig, p)
		}
	}
	return nil
}

// publishedPort is one bound host socket.
type publishedPort struct {
	Port     // HostAddr is the bound address
	ln       net.Listener
	pc       *net.UDPConn
	protocol policy.Protocol // never zero
}

// PublishedPorts returns Config.Ports as bound, in the same order, with
// each HostAddr set to the address and port actually bound (so port 0
// reports the port the kernel picked). It returns nil before Start.
func (s *Stack) PublishedPorts() []Port {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.published == nil {
		return nil
	}
	out := make([]Port, len(s.published))
	for i, p := range s.published {
		out[i] = p.Port
	}
	return out
}

// publish binds every Config.Ports entry and starts its accept or read
// loop. Start calls it once the stack is running; on error Start closes the
// stack, which closes whatever was bound.
func (s *Stack) publish() error {
	pubs := make([]*publishedPort, 0, len(s.cfg.Ports))
	for _, p := range s.cfg.Ports {
		pp, err := bindPort(p)
		if err != nil {
			for _, q := range pubs {
				q.close()
			}
			return err
		}
		pubs = append(pubs, pp)
	}
	s.mu.Lock()
	s.published = pubs
	s.mu.Unlock()
	for _, pp := range pubs {
		var closer interface{ Close() error } = pp.pc
		if pp.ln != nil {
			closer = pp.ln
		}
		s.track(closer) // Close closes the socket, which ends the loop
		if !s.goOwned(func() { s.servePort(pp) }) {
			return ErrClosed
		}
	}
	return nil
}

func bindPort(p Port) (*publishedPort, error) {
	pp := &publishedPort{Port: p, protocol: p.Protocol}
	if pp.protocol == 0 {
		pp.protocol = policy.TCP
	}
	addr := p.HostAddr.Addr().Unmap()
	if !addr.IsValid() {
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	bind := netip.AddrPortFrom(addr, p.HostAddr.Port())
	network := "tcp"
	if pp.protocol == policy.UDP {
		network = "udp"
	}
	if addr.Is4() {
		network += "4"
	}
	switch pp.protocol {
	case policy.TCP:
		ln, err := net.Listen(network, bind.String())
		if err != nil {
			return nil, fmt.Errorf("netstack: publish %s: %w", p, err)
		}
		pp.ln = ln
		pp.HostAddr = ln.Addr().(*net.TCPAddr).AddrPort()
	default:
		pc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(bind))
		if err != nil {
			return nil, fmt.Errorf("netstack: publish %s: %w", p, err)
		}
		pp.pc = pc
		pp.HostAddr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	pp.HostAddr = netip.AddrPortFrom(pp.HostAddr.Addr().Unmap(), pp.HostAddr.Port())
	return pp, nil
}

func (pp *publishedPort) close() {
	if pp.ln != nil {
		pp.ln.Close()
	}
	if pp.pc != nil {
		pp.pc.Close()
	}
}

// goOwned runs f in a goroutine that Close waits for; false (f not run)
// once the stack is closed.
func (s *Stack) goOwned(f func()) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func (s *Stack) servePort(pp *publishedPort) {
	if pp.ln != nil {
		s.acceptLoop(pp)
		return
	}
	s.udpIngressLoop(pp)
}

// ingressAllowed asks the policy about a flow from host peer towards the
// published guest port. The flow's Remote is the peer's address with the
// guest port, so ingress rules' Ports name guest ports and their
// destinations match the connecting peer (usually loopback).
func (s *Stack) ingressAllowed(proto policy.Protocol, peer netip.AddrPort, guestPort uint16) bool {
	f := policy.Flow{Direction: policy.Ingress, Protocol: proto, Remote: netip.AddrPortFrom(peer.Addr(), guestPort)}
	return s.cfg.Policy.Check(f, s.env()).Action == policy.Allow
}

func guestFullAddr(port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(Guest4.AsSlice()), Port: port}
}

// acceptLoop accepts host connections until the listener is closed.
func (s *Stack) acceptLoop(pp *publishedPort) {
	var delay time.Duration
	for {
		hc, err := pp.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			// Temporary failure (EMFILE and the like): back off.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		peer := hc.RemoteAddr().(*net.TCPAddr).AddrPort()
		if !s.ingressAllowed(policy.TCP, peer, pp.GuestPort) {
			s.stats.ingressDenied.Add(1)
			hc.Close()
			continue
		}
		if !s.beginFlow() {
			s.stats.refusedFlows.Add(1)
			hc.Close()
			continue
		}
		go func() {
			defer s.endFlow()
			s.forwardTCP(hc, pp.GuestPort)
		}()
	}
}

// forwardTCP connects from the gateway to Guest4:port and splices it with
// the host connection hc.
func (s *Stack) forwardTCP(hc net.Conn, port uint16) {
	untrack := s.track(hc) // so Close interrupts the dial
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	gc, err := gonet.DialContextTCP(ctx, s.ns, guestFullAddr(port), ipv4.ProtocolNumber)
	cancel()
	untrack()
	if err != nil {
		s.stats.refusedFlows.Add(1)
		hc.Close()
		return
	}
	s.stats.ingressTCP.Add(1)
	s.splice(gc, hc, nil)
}

// maxUDPPeersPerPort bounds the sessions of one published UDP port
// (MaxFlows bounds them all together as well).
const maxUDPPeersPerPort = 256

// udpWriteTimeout bounds one datagram's write into the stack.
const udpWriteTimeout = 250 * time.Millisecond

// udpPeer is one host peer's session: a connected gVisor UDP socket from
// the gateway to the guest port.
type udpPeer struct {
	gc   *gonet.UDPConn
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

// udpIngressLoop reads datagrams from the published host socket and relays
// each to its peer's session, creating sessions on first contact.
func (s *Stack) udpIngressLoop(pp *publishedPort) {
	var mu sync.Mutex
	peers := make(map[netip.AddrPort]*udpPeer)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, peer, err := pp.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			continue // e.g. ICMP errors reported on the socket
		}
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
		mu.Lock()
		sess := peers[peer]
		mu.Unlock()
		if sess == nil {
			sess = s.newUDPPeer(pp, peer, &mu, peers)
			if sess == nil {
				continue
			}
		}
		sess.last.Store(time.Now().UnixNano())
		// One stalled session must not hold up the other peers.
		sess.gc.SetWriteDeadline(time.Now().Add(udpWriteTimeout))
		if _, err := sess.gc.Write(buf[:n]); err == nil {
			s.stats.payloadToGuest.Add(uint64(n))
		}
	}
}

// newUDPPeer checks the policy and limits and starts a session for peer;
// nil drops the datagram.
func (s *Stack) newUDPPeer(pp *publishedPort, peer netip.AddrPort, mu *sync.Mutex, peers map[netip.AddrPort]*udpPeer) *udpPeer {
	if !s.ingressAllowed(policy.UDP, peer, pp.GuestPort) {
		s.stats.ingressDenied.Add(1)
		return nil
	}
	mu.Lock()
	full := len(peers) >= maxUDPPeersPerPort
	mu.Unlock()
	if full || !s.beginFlow() {
		s.stats.refusedFlows.Add(1)
		return nil
	}
	raddr := guestFullAddr(pp.GuestPort)
	gc, err := gonet.DialUDP(s.ns, nil, &raddr, ipv4.ProtocolNumber)
	if err != nil {
		s.endFlow()
		s.stats.refusedFlows.Add(1)
		return nil
	}
	sess := &udpPeer{gc: gc}
	sess.last.Store(time.Now().UnixNano())
	mu.Lock()
	peers[peer] = sess
	mu.Unlock()
	s.stats.ingressUDP.Add(1)
	untrack := s.track(gc)
	go func() {
		defer s.endFlow()
		defer untrack()
		s.udpReplies(pp.pc, sess, peer)
		mu.Lock()
		if peers[peer] == sess {
			delete(peers, peer)
		}
		mu.Unlock()
		gc.Close()
	}()
	return sess
}

// udpReplies relays the guest's datagrams on sess back to peer until the
// session has been idle for UDPIdleTimeout or its socket is closed.
func (s *Stack) udpReplies(hc *net.UDPConn, sess *udpPeer, peer netip.AddrPort) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	idle := s.cfg.UDPIdleTimeout
	for {
		sess.gc.SetReadDeadline(time.Unix(0, sess.last.Load()).Add(idle))
		n, err := sess.gc.Read(buf)
		if err != nil {
			if isTimeout(err) && time.Since(time.Unix(0, sess.last.Load())) < idle {
				continue
			}
			return
		}
		sess.last.Store(time.Now().UnixNano())
		if _, err := hc.WriteToUDPAddrPort(buf[:n], peer); err == nil {
			s.stats.payloadFromGuest.Add(uint64(n))
		}
	}
}
