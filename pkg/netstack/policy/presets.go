// SPDX-License-Identifier: Apache-2.0

package policy

import "fmt"

// Profile is a group of destinations FromProfiles can allow.
type Profile uint8

// The profiles, in the fixed order FromProfiles emits their rules.
const (
	ProfilePublic Profile = iota
	ProfilePrivate
	ProfileHost
)

// None denies every flow in both directions. The network stack also
// answers no DNS under it; pkg/sandbox attaches no NIC at all.
func None() *Policy {
	return &Policy{DefaultEgress: Deny, DefaultIngress: Deny}
}

// AllowAll allows every flow in both directions, including the host's
// loopback services through the gateway address.
func AllowAll() *Policy {
	return &Policy{DefaultEgress: Allow, DefaultIngress: Allow}
}

// AllowDNS returns the rules that let the guest query the sandbox DNS:
// egress to the host group on UDP and TCP port 53.
func AllowDNS() []Rule {
	return []Rule{{
		Action:      Allow,
		Destination: InGroup(GroupHost),
		Protocols:   []Protocol{UDP, TCP},
		Ports:       []PortRange{Port(53)},
	}}
}

// FromProfiles builds upstream's profile policy: egress denied and ingress
// allowed by default; with at least one profile, AllowDNS first, then one
// egress allow rule per distinct profile in the order public, private,
// host. ProfilePrivate allows GroupPrivate only (not loopback, link-local or
// metadata).
func FromProfiles(profiles ...Profile) (*Policy, error) {
	p := &Policy{DefaultEgress: Deny, DefaultIngress: Allow}
	var want [3]bool
	for _, pr := range profiles {
		if int(pr) >= len(want) {
			return nil, fmt.Errorf("policy: unknown profile %d", pr)
		}
		want[pr] = true
	}
	if len(profiles) == 0 {
		return p, nil
	}
	p.Rules = append(p.Rules, AllowDNS()...)
	groups := [...]Group{ProfilePublic: GroupPublic, ProfilePrivate: GroupPrivate, ProfileHost: GroupHost}
	for pr, ok := range want {
		if ok {
			p.Rules = append(p.Rules, Rule{Action: Allow, Destination: InGroup(groups[pr])})
		}
	}
	return p, nil
}

// Public is FromProfiles(ProfilePublic), the default policy: public unicast
// and the sandbox DNS allowed; loopback, private, CGNAT, link-local,
// metadata, multicast, invalid and host addresses denied.
func Public() *Policy {
	p, _ := FromProfiles(ProfilePublic)
	return p
}
