// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// PolicyAction is what a rule or default does: "allow" or "deny".
type PolicyAction string

// Policy actions.
const (
	PolicyActionAllow PolicyAction = "allow"
	PolicyActionDeny  PolicyAction = "deny"
)

// PolicyDirection is who opens the flows a rule matches.
type PolicyDirection string

// Rule directions; "" means egress.
const (
	PolicyDirectionEgress  PolicyDirection = "egress"
	PolicyDirectionIngress PolicyDirection = "ingress"
	PolicyDirectionAny     PolicyDirection = "any"
)

// PolicyProtocol is a transport protocol a rule matches.
type PolicyProtocol string

// Rule protocols.
const (
	PolicyProtocolTCP    PolicyProtocol = "tcp"
	PolicyProtocolUDP    PolicyProtocol = "udp"
	PolicyProtocolICMPv4 PolicyProtocol = "icmpv4"
	PolicyProtocolICMPv6 PolicyProtocol = "icmpv6"
)

// NetworkProfile is a group of destinations FromProfiles allows.
type NetworkProfile string

// Profiles.
const (
	NetworkProfilePublic  NetworkProfile = "public"
	NetworkProfilePrivate NetworkProfile = "private"
	NetworkProfileHost    NetworkProfile = "host"
)

// PolicyRule is one ordered rule; the first rule that matches a flow
// decides it.
type PolicyRule struct {
	Action    PolicyAction
	Direction PolicyDirection
	// Destination is "*", a group ("public", "private", "loopback",
	// "link-local", "metadata", "multicast", "host"), an IP, a CIDR, a
	// ".suffix" or a domain name. Domain rules match addresses the sandbox
	// resolved through the sandbox DNS.
	Destination string
	// Protocol is a single protocol (legacy); Protocols a list. Both
	// empty: any protocol.
	Protocol  PolicyProtocol
	Protocols []PolicyProtocol
	// Port ("443" or "8000-9000") and Ports restrict the ports; empty:
	// any.
	Port  string
	Ports []string
}

// DNSConfig configures the sandbox's DNS server.
type DNSConfig struct {
	// RebindProtection drops answers that point at addresses the policy
	// cannot reach (non-public); nil means on.
	RebindProtection *bool
	// Nameservers are the upstream resolvers ("1.1.1.1", "1.1.1.1:53");
	// empty means the host's.
	Nameservers []string
}

// NetworkConfig is a sandbox's network: the policy, DNS and published
// ports. Pass it with WithNetwork. A nil *NetworkConfig (no WithNetwork) is
// the public profile.
type NetworkConfig struct {
	// Disabled leaves the guest with loopback only (NetworkPolicy.None).
	Disabled bool
	Rules    []PolicyRule
	// DefaultEgress applies to guest-opened flows no rule matches; ""
	// means deny.
	DefaultEgress PolicyAction
	// DefaultIngress applies to flows towards the guest; "" means allow.
	DefaultIngress PolicyAction
	// DenyDomains and DenyDomainSuffixes are refused before the rules:
	// the sandbox DNS answers NXDOMAIN and flows to addresses resolved for
	// them are denied.
	DenyDomains        []string
	DenyDomainSuffixes []string
	DNS                *DNSConfig
	// DNSRebindProtection is the legacy spelling of DNS.RebindProtection,
	// which wins.
	DNSRebindProtection *bool
	// Ports (host → guest, TCP) and PortBindings publish guest ports.
	Ports        map[uint16]uint16
	PortBindings []PortBinding
	// MaxConnections caps concurrent flows; nil means 256.
	MaxConnections *uint
}

// PortBinding publishes one guest port on the host.
type PortBinding struct {
	// Bind is the host address; "" means 127.0.0.1, "0.0.0.0" every IPv4
	// interface.
	Bind      string
	HostPort  uint16
	GuestPort uint16
	// Protocol is "tcp" (the default when "") or "udp".
	Protocol PolicyProtocol
}

type networkPolicyFactory struct{}

// NetworkPolicy builds the preset network configurations.
var NetworkPolicy networkPolicyFactory

// None disables the network: the guest has no NIC.
func (networkPolicyFactory) None() *NetworkConfig { return &NetworkConfig{Disabled: true} }

// AllowAll allows every flow, including the host's services through the
// alias host.microsandbox.internal.
func (networkPolicyFactory) AllowAll() *NetworkConfig {
	return &NetworkConfig{DefaultEgress: PolicyActionAllow, DefaultIngress: PolicyActionAllow}
}

// PublicOnly is the default: public internet and the sandbox DNS.
func (f networkPolicyFactory) PublicOnly() *NetworkConfig {
	return f.FromProfiles(NetworkProfilePublic)
}

// FromProfiles allows the sandbox DNS and then each profile's group, in the
// order public, private, host. It panics on an unknown profile; see
// FromProfilesChecked.
func (f networkPolicyFactory) FromProfiles(profiles ...NetworkProfile) *NetworkConfig {
	c, err := f.FromProfilesChecked(profiles...)
	if err != nil {
		panic(err)
	}
	return c
}

// FromProfilesChecked is FromProfiles returning an error for an unknown
// profile.
func (networkPolicyFactory) FromProfilesChecked(profiles ...NetworkProfile) (*NetworkConfig, error) {
	c := &NetworkConfig{DefaultEgress: PolicyActionDeny, DefaultIngress: PolicyActionAllow}
	var want [3]bool
	order := [...]NetworkProfile{NetworkProfilePublic, NetworkProfilePrivate, NetworkProfileHost}
	for _, p := range profiles {
		i := -1
		for j, o := range order {
			if p == o {
				i = j
			}
		}
		if i < 0 {
			return nil, &Error{Kind: ErrInvalidConfig, Message: fmt.Sprintf("invalid config: unknown network profile %q (want public, private or host)", p)}
		}
		want[i] = true
	}
	if len(profiles) == 0 {
		return c, nil
	}
	c.Rules = append(c.Rules, Rule.AllowDNS()...)
	for i, ok := range want {
		if ok {
			c.Rules = append(c.Rules, PolicyRule{Action: PolicyActionAllow, Direction: PolicyDirectionEgress, Destination: string(order[i])})
		}
	}
	return c, nil
}

type ruleFactory struct{}

// Rule builds common policy rules.
var Rule ruleFactory

// AllowDNS allows queries to the sandbox DNS (the host group, UDP and TCP
// port 53).
func (ruleFactory) AllowDNS() []PolicyRule { return dnsRules(PolicyActionAllow) }

// DenyDNS denies queries to the sandbox DNS.
func (ruleFactory) DenyDNS() []PolicyRule { return dnsRules(PolicyActionDeny) }

func dnsRules(a PolicyAction) []PolicyRule {
	return []PolicyRule{
		{Action: a, Direction: PolicyDirectionEgress, Destination: "host", Protocols: []PolicyProtocol{PolicyProtocolUDP}, Port: "53"},
		{Action: a, Direction: PolicyDirectionEgress, Destination: "host", Protocols: []PolicyProtocol{PolicyProtocolTCP}, Port: "53"},
	}
}

// Allow allows egress to destination.
func (ruleFactory) Allow(destination string) PolicyRule {
	return PolicyRule{Action: PolicyActionAllow, Direction: PolicyDirectionEgress, Destination: destination}
}

// Deny denies egress to destination.
func (ruleFactory) Deny(destination string) PolicyRule {
	return PolicyRule{Action: PolicyActionDeny, Direction: PolicyDirectionEgress, Destination: destination}
}

// WithNetwork sets the sandbox's network; repeating replaces. Without it
// the sandbox gets the public profile.
func WithNetwork(n *NetworkConfig) SandboxOption { return func(c *SandboxConfig) { c.Network = n } }

// sandboxNetwork converts the network options of c.
func sandboxNetwork(c *SandboxConfig) (*sandbox.Network, error) {
	n := &sandbox.Network{}
	var errs []error
	if nc := c.Network; nc != nil {
		n.Disabled = nc.Disabled
		if !nc.Disabled {
			p, err := nc.policy()
			if err != nil {
				errs = append(errs, err)
			}
			n.Policy = p
		}
		if nc.DNS != nil && nc.DNS.RebindProtection != nil {
			n.AllowDNSRebinding = !*nc.DNS.RebindProtection
		} else if nc.DNSRebindProtection != nil {
			n.AllowDNSRebinding = !*nc.DNSRebindProtection
		}
		if nc.DNS != nil {
			for _, s := range nc.DNS.Nameservers {
				ap, err := parseNameserver(s)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				n.DNSServers = append(n.DNSServers, ap.String())
			}
		}
		if nc.MaxConnections != nil {
			n.MaxConnections = int(*nc.MaxConnections)
		}
		n.Ports = append(n.Ports, portMap(nc.Ports, "tcp")...)
		for _, b := range nc.PortBindings {
			n.Ports = append(n.Ports, b.binding())
		}
	}
	n.Ports = append(n.Ports, portMap(c.Ports, "tcp")...)
	n.Ports = append(n.Ports, portMap(c.PortsUDP, "udp")...)
	for _, b := range c.PortBindings {
		n.Ports = append(n.Ports, b.binding())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, &Error{Kind: ErrInvalidConfig, Message: "invalid config: network: " + err.Error(), Cause: err}
	}
	return n, nil
}

func (b PortBinding) binding() sandbox.PortBinding {
	return sandbox.PortBinding{Protocol: string(b.Protocol), Bind: b.Bind, HostPort: b.HostPort, GuestPort: b.GuestPort}
}

// portMap converts a host → guest map, in host-port order.
func portMap(m map[uint16]uint16, proto string) []sandbox.PortBinding {
	hosts := make([]int, 0, len(m))
	for h := range m {
		hosts = append(hosts, int(h))
	}
	sort.Ints(hosts)
	out := make([]sandbox.PortBinding, 0, len(m))
	for _, h := range hosts {
		out = append(out, sandbox.PortBinding{Protocol: proto, HostPort: uint16(h), GuestPort: m[uint16(h)]})
	}
	return out
}

func parseNameserver(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("nameserver %q: want an IP address, optionally with a port", s)
	}
	return netip.AddrPortFrom(a, 53), nil
}

// policy converts the rules and defaults.
func (nc *NetworkConfig) policy() (*policy.Policy, error) {
	var errs []error
	p := &policy.Policy{DefaultEgress: policy.Deny, DefaultIngress: policy.Allow}
	var err error
	if nc.DefaultEgress != "" {
		if p.DefaultEgress, err = parseAction(nc.DefaultEgress); err != nil {
			errs = append(errs, err)
		}
	}
	if nc.DefaultIngress != "" {
		if p.DefaultIngress, err = parseAction(nc.DefaultIngress); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range nc.DenyDomains {
		if policy.NormalizeName(d) == "" {
			errs = append(errs, fmt.Errorf("deny domain %q is empty", d))
			continue
		}
		p.Rules = append(p.Rules, policy.Rule{Action: policy.Deny, Direction: policy.AnyDirection, Destination: policy.Domain(d)})
	}
	for _, d := range nc.DenyDomainSuffixes {
		if policy.NormalizeName(d) == "" {
			errs = append(errs, fmt.Errorf("deny domain suffix %q is empty", d))
			continue
		}
		p.Rules = append(p.Rules, policy.Rule{Action: policy.Deny, Direction: policy.AnyDirection, Destination: policy.DomainSuffix(d)})
	}
	for i, r := range nc.Rules {
		pr, err := r.rule()
		if err != nil {
			errs = append(errs, fmt.Errorf("rule %d: %w", i, err))
			continue
		}
		p.Rules = append(p.Rules, pr)
	}
	return p, errors.Join(errs...)
}

func parseAction(a PolicyAction) (policy.Action, error) {
	switch a {
	case PolicyActionAllow:
		return policy.Allow, nil
	case PolicyActionDeny:
		return policy.Deny, nil
	}
	return policy.Deny, fmt.Errorf("action %q: want allow or deny", a)
}

func (r PolicyRule) rule() (policy.Rule, error) {
	var pr policy.Rule
	var err error
	if pr.Action, err = parseAction(r.Action); err != nil {
		return pr, err
	}
	switch r.Direction {
	case "", PolicyDirectionEgress:
		pr.Direction = policy.Egress
	case PolicyDirectionIngress:
		pr.Direction = policy.Ingress
	case PolicyDirectionAny:
		pr.Direction = policy.AnyDirection
	default:
		return pr, fmt.Errorf("direction %q: want egress, ingress or any", r.Direction)
	}
	dest := r.Destination
	if dest == "" {
		dest = "*"
	}
	if pr.Destination, err = policy.ParseDestination(dest); err != nil {
		return pr, err
	}
	protos := r.Protocols
	if r.Protocol != "" {
		protos = append([]PolicyProtocol{r.Protocol}, protos...)
	}
	for _, p := range protos {
		var pp policy.Protocol
		switch p {
		case PolicyProtocolTCP:
			pp = policy.TCP
		case PolicyProtocolUDP:
			pp = policy.UDP
		case PolicyProtocolICMPv4:
			pp = policy.ICMPv4
		case PolicyProtocolICMPv6:
			pp = policy.ICMPv6
		default:
			return pr, fmt.Errorf("protocol %q: want tcp, udp, icmpv4 or icmpv6", p)
		}
		pr.Protocols = append(pr.Protocols, pp)
	}
	ports := r.Ports
	if r.Port != "" {
		ports = append([]string{r.Port}, ports...)
	}
	for _, s := range ports {
		pr2, err := parsePortRange(s)
		if err != nil {
			return pr, err
		}
		pr.Ports = append(pr.Ports, pr2)
	}
	return pr, nil
}

func parsePortRange(s string) (policy.PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.ParseUint(hi, 10, 16)
	}
	if err1 != nil || err2 != nil || a == 0 || b < a {
		return policy.PortRange{}, fmt.Errorf("port %q: want N or N-M with 1 <= N <= M <= 65535", s)
	}
	return policy.PortRange{First: uint16(a), Last: uint16(b)}, nil
}
