// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// hostOwn stands for one of the host's interface addresses.
var hostOwn = netip.MustParseAddr("198.51.100.7")

// destClasses are guest-visible destinations, one or more per class. None
// is ever contacted: fakeNet sends every dial to 127.0.0.1.
var destClasses = []struct {
	name  string
	addr  netip.Addr
	group policy.Group
}{
	{"public4", netip.MustParseAddr("203.0.113.10"), policy.GroupPublic},
	{"public6", netip.MustParseAddr("2001:db8::10"), policy.GroupPublic},
	{"private4-10", netip.MustParseAddr("10.1.2.3"), policy.GroupPrivate},
	{"private4-172", netip.MustParseAddr("172.16.5.4"), policy.GroupPrivate},
	{"private4-192", netip.MustParseAddr("192.168.1.1"), policy.GroupPrivate},
	{"cgnat4", netip.MustParseAddr("100.64.1.1"), policy.GroupPrivate},
	{"private6-ula", netip.MustParseAddr("fd12::1"), policy.GroupPrivate},
	{"linklocal4", netip.MustParseAddr("169.254.1.1"), policy.GroupLinkLocal},
	{"metadata4", netip.MustParseAddr("169.254.169.254"), policy.GroupMetadata},
	{"metadata6", netip.MustParseAddr("fd00:ec2::254"), policy.GroupMetadata},
	{"host-gateway4", netstack.Gateway4, policy.GroupHost},
	{"host-gateway6", netstack.Gateway6, policy.GroupHost},
	{"host-own4", hostOwn, policy.GroupHost},
	{"nat64-private", netip.MustParseAddr("64:ff9b::a00:1"), policy.GroupPrivate},
	{"6to4-loopback", netip.MustParseAddr("2002:7f00:1::1"), policy.GroupLoopback},
}

func mustProfiles(p ...policy.Profile) *policy.Policy {
	pol, err := policy.FromProfiles(p...)
	if err != nil {
		panic(err)
	}
	return pol
}

func TestPolicyMatrix(t *testing.T) {
	presets := []struct {
		name    string
		pol     *policy.Policy
		allowed func(g policy.Group, proto policy.Protocol) bool
	}{
		{"none", policy.None(), func(policy.Group, policy.Protocol) bool { return false }},
		{"public-default", nil, func(g policy.Group, _ policy.Protocol) bool { return g == policy.GroupPublic }},
		{"allow-all", policy.AllowAll(), func(policy.Group, policy.Protocol) bool { return true }},
		{"private", mustProfiles(policy.ProfilePrivate), func(g policy.Group, _ policy.Protocol) bool { return g == policy.GroupPrivate }},
		{"host", mustProfiles(policy.ProfileHost), func(g policy.Group, _ policy.Protocol) bool { return g == policy.GroupHost }},
		{"rules", &policy.Policy{Rules: []policy.Rule{
			{Action: policy.Deny, Destination: policy.IP(netip.MustParseAddr("203.0.113.10"))},
			{Action: policy.Allow, Destination: policy.CIDR(netip.MustParsePrefix("10.0.0.0/8")), Protocols: []policy.Protocol{policy.TCP}, Ports: []policy.PortRange{{First: 1, Last: 65535}}},
			{Action: policy.Allow, Destination: policy.InGroup(policy.GroupPublic), Protocols: []policy.Protocol{policy.UDP}},
		}}, nil},
	}
	for _, pr := range presets {
		t.Run(pr.name, func(t *testing.T) {
			t.Parallel()
			e := startEcho(t)
			fn := &fakeNet{}
			_, g := netstacktest.Connect(t, netstack.Config{
				Policy: pr.pol, Dial: fn.Dial, HostAddrs: []netip.Addr{hostOwn}, DNSServers: []netip.AddrPort{},
			})
			for _, dc := range destClasses {
				for _, proto := range []policy.Protocol{policy.TCP, policy.UDP} {
					var want bool
					if pr.allowed != nil {
						want = pr.allowed(dc.group, proto)
					} else { // rules preset
						want = (dc.name == "private4-10" && proto == policy.TCP) ||
							(dc.name == "public6" && proto == policy.UDP)
					}
					dst := netip.AddrPortFrom(dc.addr, e.port)
					var err error
					if proto == policy.TCP {
						err = tryTCP(context.Background(), g.DialTCP, dst)
					} else if want {
						err = tryUDP(g.DialUDP, dst, 3, time.Second)
					} else {
						err = tryUDP(g.DialUDP, dst, 1, 200*time.Millisecond)
					}
					if got := err == nil; got != want {
						t.Errorf("%s %s %s: reachable = %v (err %v), want %v", pr.name, proto, dc.name, got, err, want)
					}
					target := dc.addr
					switch dc.addr {
					case netstack.Gateway4:
						target = netip.MustParseAddr("127.0.0.1")
					case netstack.Gateway6:
						target = netip.IPv6Loopback()
					}
					dialed := slices.Contains(fn.Dials(), proto.String()+" "+netip.AddrPortFrom(target, e.port).String())
					if !want && dialed {
						t.Errorf("%s %s %s: host socket dialled for a denied flow: %v", pr.name, proto, dc.name, fn.Dials())
					}
				}
			}
		})
	}
}
