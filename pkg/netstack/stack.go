// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

const nicID tcpip.NICID = 1

// Stack is one sandbox's user-mode network. Build it with New, run it with
// Start, feed it with DeliverFrame and stop it with Close.
type Stack struct {
	cfg  Config
	pins *pinTable
	dns  *resolver
	host map[netip.Addr]bool // host's own addresses; read-only after Start

	// Set in Start, read-only afterwards.
	ctx    context.Context
	cancel context.CancelFunc
	ns     *stack.Stack
	link   *channel.Endpoint
	eth    *ethernet.Endpoint

	started atomic.Bool // Start was called
	running atomic.Bool // Start finished and Close has not begun
	stats   counters

	// mu guards closed, flows, conns and pings. The flow WaitGroup is Added only
	// under mu while closed is false, so Close's Wait sees every flow.
	mu     sync.Mutex
	closed bool
	flows  int
	conns  map[io.Closer]struct{}
	pings  map[pingKey]*pingSession
	wg     sync.WaitGroup // flow goroutines, published-port loops and the frame pump

	published []*publishedPort // set by Start; see ports.go

	closeOnce sync.Once
}

// New validates cfg and returns a Stack that is not yet running. It starts
// no goroutines.
func New(cfg Config) (*Stack, error) {
	if cfg.WriteFrame == nil {
		return nil, fmt.Errorf("%w: WriteFrame is nil", ErrConfig)
	}
	if cfg.MTU != 0 && (cfg.MTU < 1280 || cfg.MTU > 65535) {
		return nil, fmt.Errorf("%w: MTU %d outside 1280..65535", ErrConfig, cfg.MTU)
	}
	if cfg.MAC[0]&1 != 0 {
		return nil, fmt.Errorf("%w: MAC %x is multicast", ErrConfig, cfg.MAC)
	}
	if err := validatePorts(cfg.Ports); err != nil {
		return nil, err
	}
	cfg.Ports = append([]Port(nil), cfg.Ports...)
	cfg.setDefaults()
	s := &Stack{cfg: cfg, conns: make(map[io.Closer]struct{}), pings: make(map[pingKey]*pingSession)}
	s.pins = newPinTable(cfg.MaxPins, cfg.Now)
	s.dns = &resolver{s: s}
	return s, nil
}

// Start builds the gVisor stack and starts the frame pump. It may be called
// once; after Close it returns ErrClosed.
func (s *Stack) Start() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed || !s.started.CompareAndSwap(false, true) {
		return ErrClosed
	}
	host := s.cfg.HostAddrs
	if host == nil {
		host = interfaceAddrs()
	}
	s.host = make(map[netip.Addr]bool, len(host))
	for _, a := range host {
		s.host[policy.Normalize(a)] = true
	}
	if s.cfg.DNSServers == nil {
		s.cfg.DNSServers = readResolvConf("/etc/resolv.conf")
	}

	netProtos := []stack.NetworkProtocolFactory{arp.NewProtocol, ipv4.NewProtocol}
	transProtos := []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4}
	if !s.cfg.DisableIPv6 {
		netProtos = append(netProtos, ipv6.NewProtocol)
		transProtos = append(transProtos, icmp.NewProtocol6)
	}
	ns := stack.New(stack.Options{NetworkProtocols: netProtos, TransportProtocols: transProtos})
	if err := configureTCP(ns); err != nil {
		ns.Destroy()
		return err
	}
	// The link MTU includes the Ethernet header, which ethernet.Endpoint
	// subtracts again.
	s.link = channel.New(s.cfg.QueueFrames, s.cfg.MTU+header.EthernetMinimumSize, tcpip.LinkAddress(s.cfg.MAC[:]))
	s.eth = ethernet.New(s.link)
	if err := ns.CreateNIC(nicID, s.eth); err != nil {
		ns.Destroy()
		return tcpipError("create nic", err)
	}
	addrs := []netip.Prefix{netip.PrefixFrom(Gateway4, Subnet4.Bits())}
	routes := []tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}}
	if !s.cfg.DisableIPv6 {
		addrs = append(addrs, netip.PrefixFrom(Gateway6, Subnet6.Bits()))
		routes = append(routes, tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	for _, p := range addrs {
		proto := ipv4.ProtocolNumber
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(p.Addr().AsSlice()), PrefixLen: p.Bits(),
		}}
		if err := ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			ns.Destroy()
			return tcpipError("add address "+p.String(), err)
		}
	}
	ns.SetRouteTable(routes)
	// Promiscuous: accept packets for any destination, so the forwarders
	// see every flow. Spoofing: reply from that destination's address.
	if err := ns.SetPromiscuousMode(nicID, true); err != nil {
		ns.Destroy()
		return tcpipError("promiscuous", err)
	}
	if err := ns.SetSpoofing(nicID, true); err != nil {
		ns.Destroy()
		return tcpipError("spoofing", err)
	}
	tf := tcp.NewForwarder(ns, 0, maxInFlight, s.handleTCP)
	ns.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(ns, s.handleUDP)
	ns.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	// The ICMP protocols are registered only so that echo requests reach
	// these handlers; no ICMP endpoint is ever opened.
	ns.SetTransportProtocolHandler(icmp.ProtocolNumber4, s.handleICMP(false))
	if !s.cfg.DisableIPv6 {
		ns.SetTransportProtocolHandler(icmp.ProtocolNumber6, s.handleICMP(true))
	}

	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.ns = ns

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.cancel()
		ns.Destroy()
		return ErrClosed
	}
	s.wg.Add(1)
	s.running.Store(true)
	s.mu.Unlock()
	go s.pump()
	if err := s.publish(); err != nil {
		s.Close()
		return err
	}
	return nil
}

// maxInFlight caps TCP handshakes waiting for the policy and the host dial
// (gVisor drops further SYNs; the guest retransmits).
const maxInFlight = 512

func configureTCP(ns *stack.Stack) error {
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &moderate, &rcv, &snd} {
		if err := ns.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return tcpipError("tcp option", err)
		}
	}
	return nil
}

// DeliverFrame hands the stack one Ethernet frame from the guest (without a
// virtio-net header). The frame is guest-controlled: frames shorter than an
// Ethernet header or longer than the MTU plus the header are dropped and
// counted; the rest is copied, so the caller may reuse frame at once.
// Frames delivered before Start or after Close are dropped. Safe for
// concurrent use.
func (s *Stack) DeliverFrame(frame []byte) {
	if len(frame) < header.EthernetMinimumSize || len(frame) > int(s.cfg.MTU)+header.EthernetMinimumSize {
		s.stats.framesDropped.Add(1)
		return
	}
	if !s.running.Load() {
		s.stats.framesDropped.Add(1)
		return
	}
	s.stats.framesFromGuest.Add(1)
	s.stats.bytesFromGuest.Add(uint64(len(frame)))
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		Payload: buffer.MakeWithData(append([]byte(nil), frame...)),
	})
	s.link.InjectInbound(0, pkt)
	pkt.DecRef()
}

// pump writes queued frames to the guest until Close.
func (s *Stack) pump() {
	defer s.wg.Done()
	buf := make([]byte, 0, s.cfg.MTU+header.EthernetMinimumSize)
	for {
		pkt := s.link.ReadContext(s.ctx)
		if pkt == nil {
			return
		}
		buf = buf[:0]
		for _, b := range pkt.AsSlices() {
			buf = append(buf, b...)
		}
		pkt.DecRef()
		s.stats.framesToGuest.Add(1)
		s.stats.bytesToGuest.Add(uint64(len(buf)))
		s.cfg.WriteFrame(buf)
	}
}

// Close stops the stack: it ends the pump, closes every flow's guest and
// host sockets, waits for every goroutine the stack started and then for
// gVisor's workers. It is idempotent, safe from any goroutine and always
// returns nil.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.running.Store(false)
		conns := make([]io.Closer, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		if !s.started.Load() {
			return
		}
		s.cancel()
		for _, c := range conns {
			c.Close()
		}
		// Aborting gVisor's endpoints unblocks flows that are still in a
		// handshake or a read.
		s.ns.Close()
		s.wg.Wait()
		s.ns.Wait()
		s.link.Close()
	})
	return nil
}

// beginFlow reserves a flow slot; false when closed or at MaxFlows.
func (s *Stack) beginFlow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.flows >= s.cfg.MaxFlows {
		return false
	}
	s.flows++
	s.wg.Add(1)
	return true
}

func (s *Stack) endFlow() {
	s.mu.Lock()
	s.flows--
	s.mu.Unlock()
	s.wg.Done()
}

// track registers closers that Close must close; the returned func
// unregisters them. If the stack is already closed it closes them at once.
func (s *Stack) track(cs ...io.Closer) (untrack func()) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		for _, c := range cs {
			c.Close()
		}
		return func() {}
	}
	for _, c := range cs {
		s.conns[c] = struct{}{}
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, c := range cs {
			delete(s.conns, c)
		}
		s.mu.Unlock()
	}
}

// isHost reports whether a is the gateway or one of the host's addresses.
func (s *Stack) isHost(a netip.Addr) bool {
	a = policy.Normalize(a)
	return a == Gateway4 || a == Gateway6 || s.host[a]
}

// env is the policy's view of this sandbox.
func (s *Stack) env() policy.Env {
	return policy.Env{IsHost: s.isHost, Names: s.pins.names}
}

func interfaceAddrs() []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}
