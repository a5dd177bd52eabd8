// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/netdev"
)

// Network is a sandbox's network. The zero value (and a nil *Network in
// Config) is upstream's default: a NIC behind the user-mode stack with the
// public profile.
type Network struct {
	// Disabled leaves the guest without a NIC (upstream's
	// NetworkPolicy.None and --no-net): only loopback.
	Disabled bool `json:"disabled,omitempty"`
	// Policy decides every flow; nil means policy.Public().
	Policy *policy.Policy `json:"policy,omitempty"`
	// Ports are published on the host while the sandbox runs.
	Ports []PortBinding `json:"ports,omitempty"`
	// AllowDNSRebinding turns the DNS rebinding protection off.
	AllowDNSRebinding bool `json:"allow_dns_rebinding,omitempty"`
	// DNSServers are the upstream resolvers ("1.1.1.1:53"); empty means
	// the host's.
	DNSServers []string `json:"dns_servers,omitempty"`
	// MaxConnections caps concurrent flows; zero means the stack's
	// default.
	MaxConnections int `json:"max_connections,omitempty"`
}

// PortBinding publishes a guest port on the host.
type PortBinding struct {
	// Protocol is "tcp" (the default when "") or "udp".
	Protocol string `json:"protocol,omitempty"`
	// Bind is the host address; "" means 127.0.0.1.
	Bind string `json:"bind,omitempty"`
	// HostPort is the host's port; zero picks a free one.
	HostPort uint16 `json:"host_port"`
	// GuestPort is the guest's port. Required.
	GuestPort uint16 `json:"guest_port"`
}

// guestMAC is the guest NIC's address: locally administered, unicast.
var guestMAC = net.HardwareAddr{0x02, 0x6d, 0x73, 0x00, 0x00, 0x02}

func (n *Network) enabled() bool { return n == nil || !n.Disabled }

func (n *Network) validate() error {
	if n == nil {
		return nil
	}
	var errs []error
	if n.Disabled && len(n.Ports) > 0 {
		errs = append(errs, fmt.Errorf("%w: published ports need a network (it is disabled)", ErrInvalidConfig))
	}
	for _, p := range n.Ports {
		if _, err := p.port(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range n.DNSServers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			errs = append(errs, fmt.Errorf("%w: DNS server %q: want IP:port", ErrInvalidConfig, s))
		}
	}
	if n.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("%w: max connections %d is negative", ErrInvalidConfig, n.MaxConnections))
	}
	seen := map[string]bool{}
	for _, p := range n.Ports {
		if p.HostPort == 0 {
			continue
		}
		k := fmt.Sprintf("%s/%s:%d", p.proto(), p.Bind, p.HostPort)
		if seen[k] {
			errs = append(errs, fmt.Errorf("%w: host port %d/%s published twice", ErrInvalidConfig, p.HostPort, p.proto()))
		}
		seen[k] = true
	}
	return errors.Join(errs...)
}

func (p PortBinding) proto() string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}

// port converts p for the network stack.
func (p PortBinding) port() (netstack.Port, error) {
	var np netstack.Port
	switch p.proto() {
	case "tcp":
		np.Protocol = policy.TCP
	case "udp":
		np.Protocol = policy.UDP
	default:
		return np, fmt.Errorf("%w: port %d: protocol %q: want tcp or udp", ErrInvalidConfig, p.GuestPort, p.Protocol)
	}
	if p.GuestPort == 0 {
		return np, fmt.Errorf("%w: port binding for host port %d has no guest port", ErrInvalidConfig, p.HostPort)
	}
	np.GuestPort = p.GuestPort
	bind := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if p.Bind != "" {
		a, err := netip.ParseAddr(p.Bind)
		if err != nil {
			return np, fmt.Errorf("%w: port %d: bind address %q: %w", ErrInvalidConfig, p.GuestPort, p.Bind, err)
		}
		bind = a
	}
	np.HostAddr = netip.AddrPortFrom(bind, p.HostPort)
	return np, nil
}

// guestNetwork is the guest side of an enabled network: the static address,
// the default route and DNS through the gateway.
func guestNetwork() *bootcfg.Network {
	return &bootcfg.Network{
		Addresses: []string{
			netip.PrefixFrom(netstack.Guest4, netstack.Subnet4.Bits()).String(),
			netip.PrefixFrom(netstack.Guest6, netstack.Subnet6.Bits()).String(),
		},
		Routes: []bootcfg.Route{
			{Destination: "default", Gateway: netstack.Gateway4.String()},
			{Destination: "default", Gateway: netstack.Gateway6.String()},
		},
		DNS: []string{netstack.Gateway4.String()},
	}
}

// nic is the sandbox process's network: a virtio-net device bridged to a
// user-mode stack. Close releases both.
type nic struct {
	dev   *netdev.Device
	stack *netstack.Stack
}

// newNIC builds the network n describes and starts the stack (which binds
// the published ports).
func newNIC(n *Network) (*nic, error) {
	var cfg netstack.Config
	if n != nil {
		cfg.Policy = n.Policy
		cfg.AllowDNSRebinding = n.AllowDNSRebinding
		cfg.MaxFlows = n.MaxConnections
		for _, s := range n.DNSServers {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				return nil, fmt.Errorf("%w: DNS server %q", ErrInvalidConfig, s)
			}
			cfg.DNSServers = append(cfg.DNSServers, ap)
		}
		for _, p := range n.Ports {
			np, err := p.port()
			if err != nil {
				return nil, err
			}
			cfg.Ports = append(cfg.Ports, np)
		}
	}
	c := &nic{}
	// A full receive queue drops the frame: TCP retransmits, as on a wire.
	cfg.WriteFrame = func(f []byte) { c.dev.Deliver(f) }
	stack, err := netstack.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	c.stack = stack
	c.dev, err = netdev.New(netdev.Config{
		MAC:     guestMAC,
		Backend: netdev.BackendFunc(func(f []byte) error { stack.DeliverFrame(f); return nil }),
	})
	if err != nil {
		stack.Close()
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := stack.Start(); err != nil {
		c.Close()
		return nil, fmt.Errorf("network: %w", err)
	}
	return c, nil
}

func (c *nic) Close() error {
	return errors.Join(c.stack.Close(), c.dev.Close())
}
