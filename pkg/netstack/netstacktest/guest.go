// SPDX-License-Identifier: Apache-2.0

package netstacktest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
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
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
)

// GuestMAC is the test guest's Ethernet address.
var GuestMAC = [6]byte{0x02, 0x6d, 0x73, 0x00, 0x00, 0x02}

const nicID tcpip.NICID = 1

// Guest is a gVisor stack playing the sandbox guest.
type Guest struct {
	ns     *stack.Stack
	link   *channel.Endpoint
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewGuest builds a guest stack with Guest4/Guest6, default routes via the
// gateways. Frames it sends go nowhere until Connect.
func NewGuest() (*Guest, error) {
	ns := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{arp.NewProtocol, ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	sack := tcpip.TCPSACKEnabled(true)
	ns.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	ns.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	ns.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	link := channel.New(1024, netstack.DefaultMTU+header.EthernetMinimumSize, tcpip.LinkAddress(GuestMAC[:]))
	if err := ns.CreateNIC(nicID, ethernet.New(link)); err != nil {
		return nil, fmt.Errorf("netstacktest: create nic: %s", err)
	}
	for _, p := range []netip.Prefix{
		netip.PrefixFrom(netstack.Guest4, netstack.Subnet4.Bits()),
		netip.PrefixFrom(netstack.Guest6, netstack.Subnet6.Bits()),
	} {
		proto := ipv4.ProtocolNumber
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(p.Addr().AsSlice()), PrefixLen: p.Bits(),
		}}
		if err := ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return nil, fmt.Errorf("netstacktest: add address: %s", err)
		}
	}
	ns.SetRouteTable([]tcpip.Route{
		{Destination: subnet(netstack.Subnet4), NIC: nicID},
		{Destination: subnet(netstack.Subnet6), NIC: nicID},
		{Destination: header.IPv4EmptySubnet, Gateway: addr(netstack.Gateway4), NIC: nicID},
		{Destination: header.IPv6EmptySubnet, Gateway: addr(netstack.Gateway6), NIC: nicID},
	})
	g := &Guest{ns: ns, link: link}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g, nil
}

func addr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }

func subnet(p netip.Prefix) tcpip.Subnet {
	s, err := tcpip.NewSubnet(addr(p.Addr()), tcpip.MaskFromBytes(net.CIDRMask(p.Bits(), p.Addr().BitLen())))
	if err != nil {
		panic(err) // constant prefixes: impossible
	}
	return s
}

// DeliverFrame hands the guest a frame from the host stack.
func (g *Guest) DeliverFrame(frame []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(append([]byte(nil), frame...))})
	g.link.InjectInbound(0, pkt)
	pkt.DecRef()
}

// Start pumps the guest's outgoing frames to deliver (usually
// netstack.Stack.DeliverFrame) until Close.
func (g *Guest) Start(deliver func([]byte)) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		buf := make([]byte, 0, 65536)
		for {
			pkt := g.link.ReadContext(g.ctx)
			if pkt == nil {
				return
			}
			buf = buf[:0]
			for _, b := range pkt.AsSlices() {
				buf = append(buf, b...)
			}
			pkt.DecRef()
			deliver(buf)
		}
	}()
}

// Close stops the pump and the guest stack and waits for them.
func (g *Guest) Close() {
	g.once.Do(func() {
		g.cancel()
		g.ns.Close()
		g.wg.Wait()
		g.ns.Wait()
		g.link.Close()
	})
}

func full(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr()
	proto := ipv4.ProtocolNumber
	if a.Is6() && !a.Is4In6() {
		proto = ipv6.ProtocolNumber
	} else {
		a = a.Unmap()
	}
	return tcpip.FullAddress{NIC: nicID, Addr: addr(a), Port: ap.Port()}, proto
}

// DialTCP connects from the guest to dst.
func (g *Guest) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	fa, proto := full(dst)
	return gonet.DialContextTCP(ctx, g.ns, fa, proto)
}

// DialUDP opens a connected guest UDP socket to dst.
func (g *Guest) DialUDP(dst netip.AddrPort) (net.Conn, error) {
	fa, proto := full(dst)
	return gonet.DialUDP(g.ns, nil, &fa, proto)
}

// Ping sends one ICMP echo request (ICMPv6 for an IPv6 dst) with seq and
// data from a guest ping socket and returns the data of the first echo
// reply carrying seq, or an error when ctx ends first.
func (g *Guest) Ping(ctx context.Context, dst netip.Addr, seq uint16, data []byte) ([]byte, error) {
	fa, netProto := full(netip.AddrPortFrom(dst, 0))
	transProto, typ := icmp.ProtocolNumber4, byte(header.ICMPv4Echo)
	if netProto == ipv6.ProtocolNumber {
		transProto, typ = icmp.ProtocolNumber6, byte(header.ICMPv6EchoRequest)
	}
	var wq waiter.Queue
	ep, terr := g.ns.NewEndpoint(transProto, netProto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstacktest: ping endpoint: %s", terr)
	}
	defer ep.Close()
	we, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	msg := make([]byte, header.ICMPv4MinimumSize+len(data))
	msg[0] = typ
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[header.ICMPv4MinimumSize:], data)
	var r bytes.Reader
	r.Reset(msg)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{To: &fa}); terr != nil {
		return nil, fmt.Errorf("netstacktest: ping write: %s", terr)
	}
	for {
		var b bytes.Buffer
		_, terr := ep.Read(&b, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-ready:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if terr != nil {
			return nil, fmt.Errorf("netstacktest: ping read: %s", terr)
		}
		if rep := b.Bytes(); len(rep) >= header.ICMPv4MinimumSize && binary.BigEndian.Uint16(rep[6:]) == seq {
			return rep[header.ICMPv4MinimumSize:], nil
		}
	}
}

// ListenTCP listens on the guest's Guest4:port, as a guest service behind a
// published port would.
func (g *Guest) ListenTCP(port uint16) (net.Listener, error) {
	fa, proto := full(netip.AddrPortFrom(netstack.Guest4, port))
	return gonet.ListenTCP(g.ns, fa, proto)
}

// ListenUDP binds a guest UDP socket on Guest4:port; it reads and writes
// with ReadFrom and WriteTo.
func (g *Guest) ListenUDP(port uint16) (net.PacketConn, error) {
	fa, proto := full(netip.AddrPortFrom(netstack.Guest4, port))
	return gonet.DialUDP(g.ns, &fa, nil, proto)
}

// Connect builds a netstack.Stack from cfg (its WriteFrame is replaced),
// wires a new Guest to it, starts both and closes both when t ends.
func Connect(t testing.TB, cfg netstack.Config) (*netstack.Stack, *Guest) {
	t.Helper()
	g, err := NewGuest()
	if err != nil {
		t.Fatal(err)
	}
	cfg.WriteFrame = g.DeliverFrame
	s, err := netstack.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	g.Start(s.DeliverFrame)
	t.Cleanup(func() {
		g.Close()
		s.Close()
	})
	return s, g
}
