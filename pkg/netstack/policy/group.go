// SPDX-License-Identifier: Apache-2.0

package policy

import "net/netip"

// Group is a class of destination addresses. The classes are disjoint:
// [Classify] puts every address in exactly one.
type Group uint8

// The groups, in the order [Classify] tests them.
const (
	// GroupInvalid holds addresses no flow may reach whatever the policy:
	// the zero netip.Addr, unspecified addresses (0.0.0.0/8, ::), the
	// IPv4-compatible IPv6 block ::/96 and the reserved 240.0.0.0/4.
	// No group rule matches them; only "*" and CIDR rules can, and the
	// network stack refuses them before asking the policy.
	GroupInvalid Group = iota
	// GroupHost is the sandbox's gateway and the host's own addresses.
	GroupHost
	// GroupMetadata is the cloud metadata service: 169.254.169.254 and
	// fd00:ec2::254.
	GroupMetadata
	// GroupLoopback is 127.0.0.0/8 and ::1.
	GroupLoopback
	// GroupPrivate is RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT
	// 100.64.0.0/10 (RFC 6598), IETF protocol assignments 192.0.0.0/24,
	// benchmarking 198.18.0.0/15, unique local fc00::/7 and the deprecated
	// site-local fec0::/10.
	GroupPrivate
	// GroupLinkLocal is 169.254.0.0/16 and fe80::/10.
	GroupLinkLocal
	// GroupMulticast is multicast (224.0.0.0/4, ff00::/8) and the limited
	// broadcast address 255.255.255.255.
	GroupMulticast
	// GroupPublic is every other address.
	GroupPublic
)

var groupNames = [...]string{
	GroupInvalid:   "invalid",
	GroupHost:      "host",
	GroupMetadata:  "metadata",
	GroupLoopback:  "loopback",
	GroupPrivate:   "private",
	GroupLinkLocal: "link-local",
	GroupMulticast: "multicast",
	GroupPublic:    "public",
}

// String returns the group's upstream name ("public", "link-local", ...).
func (g Group) String() string {
	if int(g) < len(groupNames) {
		return groupNames[g]
	}
	return "group(?)"
}

// ParseGroup returns the group named s, as upstream spells it.
func ParseGroup(s string) (Group, bool) {
	for g, n := range groupNames {
		if n == s && Group(g) != GroupInvalid {
			return Group(g), true
		}
	}
	return GroupInvalid, false
}

var (
	metadataAddrs = []netip.Addr{
		netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack
		netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	}
	invalidPrefixes = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),   // RFC 1122 "this network"
		netip.MustParsePrefix("240.0.0.0/4"), // RFC 1112 reserved (255.255.255.255 is tested first)
		netip.MustParsePrefix("::/96"),       // IPv4-compatible, deprecated by RFC 4291
	}
	privatePrefixes = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
		netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
		netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
		netip.MustParsePrefix("100.64.0.0/10"),  // RFC 6598 CGNAT
		netip.MustParsePrefix("192.0.0.0/24"),   // RFC 6890 IETF protocol assignments
		netip.MustParsePrefix("198.18.0.0/15"),  // RFC 2544 benchmarking
		netip.MustParsePrefix("fc00::/7"),       // RFC 4193 unique local
		netip.MustParsePrefix("fec0::/10"),      // RFC 3879 deprecated site-local
	}
	// Prefixes whose addresses embed an IPv4 address that a translator on
	// the host's network would reach: NAT64 (RFC 6052, RFC 8215) at bits
	// 96..127, 6to4 (RFC 3056) at bits 16..47.
	nat64Prefixes = []netip.Prefix{
		netip.MustParsePrefix("64:ff9b::/96"),
		netip.MustParsePrefix("64:ff9b:1::/48"),
	}
	sixToFour    = netip.MustParsePrefix("2002::/16")
	broadcast4   = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	loopbackIPv6 = netip.IPv6Loopback()
)

// Normalize returns the address a flow to a really reaches: IPv4-mapped
// IPv6 (::ffff:a.b.c.d) becomes IPv4, the zone is dropped.
func Normalize(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// Classify returns the group of a. isHost reports whether an address is
// the gateway or one of the host's own; nil means none is. a is normalised
// first, and IPv6 addresses that embed an IPv4 address for a translator
// (NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16) take the more
// restrictive of their own class and the embedded address's class.
func Classify(a netip.Addr, isHost func(netip.Addr) bool) Group {
	a = Normalize(a)
	g := classify(a, isHost)
	if g != GroupPublic || !a.Is6() {
		return g
	}
	var v4 [4]byte
	b := a.As16()
	switch {
	case nat64Prefixes[0].Contains(a) || nat64Prefixes[1].Contains(a):
		copy(v4[:], b[12:16])
	case sixToFour.Contains(a):
		copy(v4[:], b[2:6])
	default:
		return g
	}
	return classify(netip.AddrFrom4(v4), isHost)
}

func classify(a netip.Addr, isHost func(netip.Addr) bool) Group {
	if !a.IsValid() || a.IsUnspecified() {
		return GroupInvalid
	}
	if a == broadcast4 {
		return GroupMulticast
	}
	if a != loopbackIPv6 {
		for _, p := range invalidPrefixes {
			if p.Contains(a) {
				return GroupInvalid
			}
		}
	}
	if isHost != nil && isHost(a) {
		return GroupHost
	}
	for _, m := range metadataAddrs {
		if a == m {
			return GroupMetadata
		}
	}
	if a.IsLoopback() {
		return GroupLoopback
	}
	for _, p := range privatePrefixes {
		if p.Contains(a) {
			return GroupPrivate
		}
	}
	if a.IsLinkLocalUnicast() {
		return GroupLinkLocal
	}
	if a.IsMulticast() {
		return GroupMulticast
	}
	return GroupPublic
}
