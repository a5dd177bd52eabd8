// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Action is what a rule or a default does with a flow.
type Action uint8

const (
	// Deny refuses the flow. It is the zero Action, so a forgotten default
	// fails closed.
	Deny Action = iota
	// Allow lets the flow through.
	Allow
)

// String returns "allow" or "deny".
func (a Action) String() string {
	if a == Allow {
		return "allow"
	}
	return "deny"
}

// Direction is who opened a flow.
type Direction uint8

const (
	// Egress is a flow the guest opens. It is the zero Direction.
	Egress Direction = iota
	// Ingress is a flow opened towards the guest (published ports).
	Ingress
	// AnyDirection, in a rule, matches both directions. It is not a valid
	// Flow direction.
	AnyDirection
)

// Protocol is a transport protocol.
type Protocol uint8

// The protocols a rule can name.
const (
	TCP Protocol = iota + 1
	UDP
	ICMPv4
	ICMPv6
)

// String returns the upstream spelling ("tcp", "udp", "icmpv4", "icmpv6").
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMPv4:
		return "icmpv4"
	case ICMPv6:
		return "icmpv6"
	}
	return "protocol(?)"
}

// PortRange is the inclusive range First..Last.
type PortRange struct {
	First, Last uint16
}

// Port returns the range holding only p.
func Port(p uint16) PortRange { return PortRange{p, p} }

// Contains reports whether p is in r.
func (r PortRange) Contains(p uint16) bool { return r.First <= p && p <= r.Last }

// DestKind says which field of a Destination is used.
type DestKind uint8

// The destination kinds.
const (
	// DestAny matches every destination. It is the zero DestKind.
	DestAny DestKind = iota
	// DestPrefix matches addresses in Destination.Prefix.
	DestPrefix
	// DestDomain matches addresses the sandbox resolved from exactly
	// Destination.Name through the sandbox DNS.
	DestDomain
	// DestDomainSuffix matches addresses the sandbox resolved from
	// Destination.Name or any name below it.
	DestDomainSuffix
	// DestGroup matches addresses that [Classify] puts in Destination.Group.
	DestGroup
)

// Destination is what a rule matches a flow's remote address against.
// Build one with AnyDest, CIDR, IP, Domain, DomainSuffix or InGroup.
type Destination struct {
	Kind   DestKind
	Prefix netip.Prefix // DestPrefix; masked, IPv4-mapped prefixes unmapped
	Name   string       // DestDomain, DestDomainSuffix: lower case, no leading or trailing dot
	Group  Group        // DestGroup
}

// AnyDest matches every destination.
func AnyDest() Destination { return Destination{} }

// CIDR matches addresses in p.
func CIDR(p netip.Prefix) Destination {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return Destination{Kind: DestPrefix, Prefix: p.Masked()}
}

// IP matches exactly a.
func IP(a netip.Addr) Destination {
	a = Normalize(a)
	return Destination{Kind: DestPrefix, Prefix: netip.PrefixFrom(a, a.BitLen())}
}

// Domain matches addresses the sandbox resolved from name.
func Domain(name string) Destination {
	return Destination{Kind: DestDomain, Name: NormalizeName(name)}
}

// DomainSuffix matches addresses the sandbox resolved from suffix itself or
// any name below it: ".example.com" and "example.com" both match
// example.com and a.b.example.com, not badexample.com.
func DomainSuffix(suffix string) Destination {
	return Destination{Kind: DestDomainSuffix, Name: NormalizeName(suffix)}
}

// InGroup matches addresses in group g.
func InGroup(g Group) Destination { return Destination{Kind: DestGroup, Group: g} }

// ParseDestination parses upstream's destination strings: "*", a group name
// ("public", "private", "loopback", "link-local", "metadata", "multicast",
// "host"), an IP, a CIDR, ".suffix" or a domain name.
func ParseDestination(s string) (Destination, error) {
	switch {
	case s == "*":
		return AnyDest(), nil
	case strings.HasPrefix(s, "."):
		if NormalizeName(s) == "" {
			return Destination{}, fmt.Errorf("policy: empty domain suffix %q", s)
		}
		return DomainSuffix(s), nil
	}
	if g, ok := ParseGroup(s); ok {
		return InGroup(g), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return IP(a), nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return CIDR(p), nil
	}
	if NormalizeName(s) == "" || strings.ContainsAny(s, " /:*") {
		return Destination{}, fmt.Errorf("policy: bad destination %q", s)
	}
	return Domain(s), nil
}

// NormalizeName lower-cases a DNS name and strips leading and trailing dots.
func NormalizeName(name string) string {
	return strings.Trim(strings.ToLower(name), ".")
}

// matchName reports whether name (normalised) is matched by a domain or
// suffix destination.
func (d Destination) matchName(name string) bool {
	switch d.Kind {
	case DestDomain:
		return name == d.Name
	case DestDomainSuffix:
		return name == d.Name || strings.HasSuffix(name, "."+d.Name)
	}
	return false
}

func (d Destination) isDomain() bool { return d.Kind == DestDomain || d.Kind == DestDomainSuffix }

// Rule is one ordered entry of a Policy.
type Rule struct {
	Action      Action
	Direction   Direction // zero: Egress
	Destination Destination
	Protocols   []Protocol  // empty: any protocol
	Ports       []PortRange // empty: any port; ICMP flows match only rules without ports
}

// Policy is an ordered rule list with a default per direction. The zero
// Policy denies everything, like [None].
type Policy struct {
	// Rules are evaluated in order; the first that matches decides.
	Rules []Rule
	// DefaultEgress applies to guest-opened flows no rule matches. Zero: Deny.
	DefaultEgress Action
	// DefaultIngress applies to flows towards the guest no rule matches.
	// Zero: Deny.
	DefaultIngress Action
}

// Flow is one connection attempt (TCP SYN) or UDP/ICMP session.
type Flow struct {
	Direction Direction // Egress or Ingress
	Protocol  Protocol
	// Remote is the far end: the destination for Egress, the peer for
	// Ingress. It may be IPv4-mapped; it is normalised before matching.
	Remote netip.AddrPort
}

// Env is the state outside the policy that decisions read. The zero Env
// knows no host addresses and no resolved names.
type Env struct {
	// IsHost reports whether an address is the sandbox gateway or one of
	// the host's own. Nil: none is.
	IsHost func(netip.Addr) bool
	// Names returns the names (normalised) that the sandbox resolved to an
	// address through the sandbox DNS and whose answers have not expired.
	// Nil: none.
	Names func(netip.Addr) []string
}

// Verdict is the outcome of a check.
type Verdict struct {
	Action Action
	// Rule is the index of the deciding rule, or -1 for the default.
	Rule int
	// Group is the class of the flow's remote address.
	Group Group
}

// Check decides flow f. Domain rules match only when env.Names reports
// that the sandbox resolved a matching name to the address.
func (p *Policy) Check(f Flow, env Env) Verdict {
	a := Normalize(f.Remote.Addr())
	g := Classify(a, env.IsHost)
	var names []string
	namesDone := false
	for i, r := range p.Rules {
		if !r.matchesDirection(f.Direction) || !r.matchesProtocol(f.Protocol) || !r.matchesPort(f.Protocol, f.Remote.Port()) {
			continue
		}
		d := r.Destination
		match := false
		switch d.Kind {
		case DestAny:
			match = true
		case DestPrefix:
			match = d.Prefix.Contains(a)
		case DestGroup:
			match = d.Group == g && g != GroupInvalid
		case DestDomain, DestDomainSuffix:
			if !namesDone && env.Names != nil {
				names, namesDone = env.Names(a), true
			}
			for _, n := range names {
				if d.matchName(n) {
					match = true
					break
				}
			}
		}
		if match {
			return Verdict{Action: r.Action, Rule: i, Group: g}
		}
	}
	return Verdict{Action: p.defaultFor(f.Direction), Rule: -1, Group: g}
}

// CheckName decides whether the sandbox DNS may resolve name. The first
// egress domain or suffix rule matching name decides, except that a deny
// rule limited to protocols or ports is skipped (it is enforced when the
// guest connects); no match allows the lookup, since address rules are
// enforced per flow.
func (p *Policy) CheckName(name string) Verdict {
	name = NormalizeName(name)
	for i, r := range p.Rules {
		if !r.Destination.isDomain() || !r.matchesDirection(Egress) || !r.Destination.matchName(name) {
			continue
		}
		if r.Action == Deny && (len(r.Protocols) > 0 || len(r.Ports) > 0) {
			continue
		}
		return Verdict{Action: r.Action, Rule: i, Group: GroupPublic}
	}
	return Verdict{Action: Allow, Rule: -1, Group: GroupPublic}
}

// CheckServerName decides a flow by a server name the guest declared
// itself (the TLS SNI of its first bytes), not one the sandbox resolved:
// the first egress domain or suffix rule that matches name, f's protocol
// and f's port decides, and ok is false when none does. Address rules are
// not consulted; the caller combines this verdict with [Policy.Check] (a
// deny here refuses the flow whatever the address rules say, as a denied
// name never resolves through the sandbox DNS either).
func (p *Policy) CheckServerName(name string, f Flow) (v Verdict, ok bool) {
	name = NormalizeName(name)
	if name == "" {
		return Verdict{Rule: -1}, false
	}
	for i, r := range p.Rules {
		if !r.Destination.isDomain() || !r.matchesDirection(f.Direction) || !r.matchesProtocol(f.Protocol) ||
			!r.matchesPort(f.Protocol, f.Remote.Port()) || !r.Destination.matchName(name) {
			continue
		}
		return Verdict{Action: r.Action, Rule: i, Group: GroupPublic}, true
	}
	return Verdict{Rule: -1}, false
}

// DomainRules reports whether some rule with a domain or suffix
// destination could allow, or deny, a flow with f's direction, protocol
// and port (f's address is ignored).
func (p *Policy) DomainRules(f Flow) (allow, deny bool) {
	for _, r := range p.Rules {
		if !r.Destination.isDomain() || !r.matchesDirection(f.Direction) || !r.matchesProtocol(f.Protocol) ||
			!r.matchesPort(f.Protocol, f.Remote.Port()) {
			continue
		}
		if r.Action == Allow {
			allow = true
		} else {
			deny = true
		}
	}
	return allow, deny
}

// Reachable reports whether some egress flow to a could be allowed by an
// address rule (any, CIDR or group) or the default, ignoring protocols,
// ports and domain rules. DNS rebinding protection drops answers that point
// at non-public addresses that are not reachable.
func (p *Policy) Reachable(a netip.Addr, env Env) bool {
	a = Normalize(a)
	g := Classify(a, env.IsHost)
	if g == GroupInvalid {
		return false
	}
	for _, r := range p.Rules {
		if !r.matchesDirection(Egress) {
			continue
		}
		d := r.Destination
		var match bool
		switch d.Kind {
		case DestAny:
			match = true
		case DestPrefix:
			match = d.Prefix.Contains(a)
		case DestGroup:
			match = d.Group == g
		}
		if !match {
			continue
		}
		if r.Action == Allow {
			return true
		}
		if len(r.Protocols) == 0 && len(r.Ports) == 0 {
			return false
		}
	}
	return p.DefaultEgress == Allow
}

func (p *Policy) defaultFor(d Direction) Action {
	if d == Ingress {
		return p.DefaultIngress
	}
	return p.DefaultEgress
}

func (r *Rule) matchesDirection(d Direction) bool {
	return r.Direction == AnyDirection || r.Direction == d
}

func (r *Rule) matchesProtocol(p Protocol) bool {
	if len(r.Protocols) == 0 {
		return true
	}
	for _, q := range r.Protocols {
		if q == p {
			return true
		}
	}
	return false
}

func (r *Rule) matchesPort(p Protocol, port uint16) bool {
	if len(r.Ports) == 0 {
		return true
	}
	if p != TCP && p != UDP {
		return false
	}
	for _, pr := range r.Ports {
		if pr.Contains(port) {
			return true
		}
	}
	return false
}
