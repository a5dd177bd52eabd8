// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// The sandbox subnet. Every sandbox gets the same addresses: each has its
// own stack, so they never meet. 100.96.0.0/30 sits in CGNAT space
// (RFC 6598), which home and office LANs do not use and which the public
// profile denies anyway, so the guest's on-link route hides nothing the
// default policy would let it reach. The IPv6 subnet is a ULA /64
// (RFC 4193) taken from upstream microsandbox's pool.
var (
	// Gateway4 is the stack's IPv4 address: the guest's default gateway and
	// DNS server, and the alias of the host.
	Gateway4 = netip.MustParseAddr("100.96.0.1")
	// Guest4 is the guest's static IPv4 address.
	Guest4 = netip.MustParseAddr("100.96.0.2")
	// Subnet4 is the sandbox's IPv4 subnet.
	Subnet4 = netip.MustParsePrefix("100.96.0.0/30")
	// Gateway6 is the stack's IPv6 address.
	Gateway6 = netip.MustParseAddr("fd42:6d73:62::1")
	// Guest6 is the guest's static IPv6 address.
	Guest6 = netip.MustParseAddr("fd42:6d73:62::2")
	// Subnet6 is the sandbox's IPv6 subnet.
	Subnet6 = netip.MustParsePrefix("fd42:6d73:62::/64")
)

// HostName resolves, in the sandbox DNS, to the gateway addresses.
const HostName = "host.microsandbox.internal"

// DefaultMTU is the IP MTU when Config.MTU is zero.
const DefaultMTU = 1500

// GatewayMAC is the stack's Ethernet address when Config.MAC is zero: a
// locally administered unicast address (IEEE 802, bit 1 of the first
// octet set), in upstream microsandbox's 02:6d:73 ("ms") pattern.
var GatewayMAC = [6]byte{0x02, 0x6d, 0x73, 0x00, 0x00, 0x01}

// DialFunc opens a host connection. network is "tcp" or "udp" and address
// a literal "ip:port"; the context carries the dial timeout.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config configures a Stack. The zero Config is usable once WriteFrame is
// set: default policy, host resolvers, default limits.
type Config struct {
	// WriteFrame receives every Ethernet frame (no virtio-net header) for
	// the guest, from the stack's pump goroutine, one call at a time. The
	// slice is valid only until WriteFrame returns. It should not block
	// for long: frames queue behind it, and when the queue is full the stack
	// drops them (TCP retransmits). Required.
	WriteFrame func(frame []byte)

	// Policy decides every flow. Nil: policy.Public(), the default profile.
	Policy *policy.Policy

	// MTU is the IP MTU of the link. Zero: DefaultMTU.
	MTU uint32
	// MAC is the stack's Ethernet address. Zero: GatewayMAC.
	MAC [6]byte
	// DisableIPv6 leaves IPv6 out of the stack. Zero: IPv4 and IPv6.
	DisableIPv6 bool

	// Dial opens host sockets for allowed flows. Nil: a net.Dialer.
	Dial DialFunc
	// DialTimeout bounds each dial. Zero: 10 s.
	DialTimeout time.Duration
	// HostAddrs are the host's own addresses, which the policy classifies
	// as the host group. Nil: the addresses of the host's interfaces when
	// Start runs.
	HostAddrs []netip.Addr
	// MaxFlows caps concurrent TCP connections plus UDP and ping sessions; flows
	// beyond it are refused like denied ones. Zero: 256 (upstream's
	// default).
	MaxFlows int
	// UDPIdleTimeout ends a UDP session with no traffic either way. Zero: 60 s.
	UDPIdleTimeout time.Duration
	// Ping opens the host socket of each allowed guest ping session (one
	// per guest address, destination and echo identifier). Nil:
	// [ListenPing]. Sessions count towards MaxFlows.
	Ping PingFunc
	// PingIdleTimeout ends a ping session with no echo either way. Zero: 10 s.
	PingIdleTimeout time.Duration
	// QueueFrames is the length of the queue of frames for the guest.
	// Zero: 1024.
	QueueFrames int

	// DNSServers are the upstream resolvers. Nil: the nameserver lines of
	// /etc/resolv.conf, port 53. Empty (non-nil): none; every forwarded
	// query fails with SERVFAIL.
	DNSServers []netip.AddrPort
	// DNSTimeout bounds one upstream exchange. Zero: 5 s.
	DNSTimeout time.Duration
	// AllowDNSRebinding turns rebinding protection off. Zero: answers that
	// point at a non-public address the policy cannot reach are dropped,
	// and a reply left without addresses becomes NXDOMAIN.
	AllowDNSRebinding bool
	// MaxPins bounds the table of resolved (name, address) pairs used by
	// domain rules. Zero: 4096.
	MaxPins int

	// Ports are published on the host when Start runs (see [Port]): each
	// accepted TCP connection, or each UDP peer, is forwarded to the
	// guest's port through the stack, after an ingress policy check whose
	// remote is the host peer's address with the guest port. Start fails if
	// any cannot be bound; [Stack.PublishedPorts] reports the bound
	// addresses. Connections and UDP sessions count towards MaxFlows.
	Ports []Port

	// Now is the clock for DNS pin expiry. Nil: time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Policy == nil {
		c.Policy = policy.Public()
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MAC == ([6]byte{}) {
		c.MAC = GatewayMAC
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = 256
	}
	if c.UDPIdleTimeout == 0 {
		c.UDPIdleTimeout = 60 * time.Second
	}
	if c.Ping == nil {
		c.Ping = ListenPing
	}
	if c.PingIdleTimeout == 0 {
		c.PingIdleTimeout = 10 * time.Second
	}
	if c.QueueFrames == 0 {
		c.QueueFrames = 1024
	}
	if c.DNSTimeout == 0 {
		c.DNSTimeout = 5 * time.Second
	}
	if c.MaxPins == 0 {
		c.MaxPins = 4096
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}
