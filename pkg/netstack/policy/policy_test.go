// SPDX-License-Identifier: Apache-2.0

package policy_test

import (
	"net/netip"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

var gw = netip.MustParseAddr("100.96.0.1")

func isHost(a netip.Addr) bool { return a == gw || a == netip.MustParseAddr("198.51.100.7") }

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want policy.Group
	}{
		{"8.8.8.8", policy.GroupPublic},
		{"2606:4700::1111", policy.GroupPublic},
		{"0.0.0.0", policy.GroupInvalid},
		{"0.1.2.3", policy.GroupInvalid},
		{"::", policy.GroupInvalid},
		{"::ffff:0.0.0.0", policy.GroupInvalid},
		{"::127.0.0.1", policy.GroupInvalid},
		{"240.0.0.1", policy.GroupInvalid},
		{"100.96.0.1", policy.GroupHost},
		{"198.51.100.7", policy.GroupHost},
		{"::ffff:198.51.100.7", policy.GroupHost},
		{"169.254.169.254", policy.GroupMetadata},
		{"::ffff:169.254.169.254", policy.GroupMetadata},
		{"fd00:ec2::254", policy.GroupMetadata},
		{"127.0.0.1", policy.GroupLoopback},
		{"127.0.0.2", policy.GroupLoopback},
		{"::1", policy.GroupLoopback},
		{"::ffff:127.0.0.1", policy.GroupLoopback},
		{"64:ff9b::7f00:1", policy.GroupLoopback},
		{"2002:7f00:1::", policy.GroupLoopback},
		{"2002:a9fe:a9fe::", policy.GroupMetadata},
		{"10.0.0.1", policy.GroupPrivate},
		{"172.31.255.255", policy.GroupPrivate},
		{"172.32.0.1", policy.GroupPublic},
		{"192.168.0.1", policy.GroupPrivate},
		{"100.64.0.1", policy.GroupPrivate},
		{"100.127.255.255", policy.GroupPrivate},
		{"100.128.0.1", policy.GroupPublic},
		{"fd12::1", policy.GroupPrivate},
		{"fec0::1", policy.GroupPrivate},
		{"::ffff:10.1.1.1", policy.GroupPrivate},
		{"169.254.1.1", policy.GroupLinkLocal},
		{"fe80::1", policy.GroupLinkLocal},
		{"fe80::1%eth0", policy.GroupLinkLocal},
		{"224.0.0.1", policy.GroupMulticast},
		{"255.255.255.255", policy.GroupMulticast},
		{"ff02::1", policy.GroupMulticast},
	} {
		if got := policy.Classify(netip.MustParseAddr(tc.addr), isHost); got != tc.want {
			t.Errorf("Classify(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func flow(proto policy.Protocol, ap string) policy.Flow {
	return policy.Flow{Direction: policy.Egress, Protocol: proto, Remote: netip.MustParseAddrPort(ap)}
}

func TestCheck(t *testing.T) {
	names := map[netip.Addr][]string{netip.MustParseAddr("203.0.113.5"): {"api.example.com"}, netip.MustParseAddr("203.0.113.6"): {"x.cdn.example.net"}}
	env := policy.Env{IsHost: isHost, Names: func(a netip.Addr) []string { return names[a] }}
	rules := &policy.Policy{
		Rules: []policy.Rule{
			{Action: policy.Deny, Destination: policy.IP(netip.MustParseAddr("203.0.113.9"))},
			{Action: policy.Allow, Destination: policy.Domain("API.example.com."), Protocols: []policy.Protocol{policy.TCP}, Ports: []policy.PortRange{policy.Port(443)}},
			{Action: policy.Allow, Destination: policy.DomainSuffix(".example.net")},
			{Action: policy.Allow, Destination: policy.CIDR(netip.MustParsePrefix("::ffff:10.0.0.0/104")), Ports: []policy.PortRange{{First: 8000, Last: 9000}}},
			{Action: policy.Allow, Direction: policy.Ingress, Destination: policy.AnyDest()},
			{Action: policy.Deny, Direction: policy.AnyDirection, Destination: policy.InGroup(policy.GroupMetadata)},
		},
		DefaultEgress: policy.Allow,
	}
	for _, tc := range []struct {
		name string
		pol  *policy.Policy
		f    policy.Flow
		want policy.Action
		rule int
	}{
		{"zero policy denies", &policy.Policy{}, flow(policy.TCP, "8.8.8.8:443"), policy.Deny, -1},
		{"none", policy.None(), flow(policy.UDP, "8.8.8.8:53"), policy.Deny, -1},
		{"allowall", policy.AllowAll(), flow(policy.TCP, "127.0.0.1:22"), policy.Allow, -1},
		{"public ok", policy.Public(), flow(policy.TCP, "8.8.8.8:443"), policy.Allow, 1},
		{"public dns to host", policy.Public(), flow(policy.UDP, "100.96.0.1:53"), policy.Allow, 0},
		{"public host other port", policy.Public(), flow(policy.TCP, "100.96.0.1:22"), policy.Deny, -1},
		{"public private", policy.Public(), flow(policy.TCP, "192.168.1.1:80"), policy.Deny, -1},
		{"public mapped loopback", policy.Public(), flow(policy.TCP, "[::ffff:127.0.0.1]:80"), policy.Deny, -1},
		{"public metadata", policy.Public(), flow(policy.TCP, "169.254.169.254:80"), policy.Deny, -1},
		{"public metadata6", policy.Public(), flow(policy.TCP, "[fd00:ec2::254]:80"), policy.Deny, -1},
		{"public unspecified", policy.Public(), flow(policy.TCP, "0.0.0.0:80"), policy.Deny, -1},
		{"public multicast", policy.Public(), flow(policy.UDP, "224.0.0.251:5353"), policy.Deny, -1},
		{"public own host addr", policy.Public(), flow(policy.TCP, "198.51.100.7:22"), policy.Deny, -1},
		{"first match deny ip", rules, flow(policy.TCP, "203.0.113.9:443"), policy.Deny, 0},
		{"domain pinned port ok", rules, flow(policy.TCP, "203.0.113.5:443"), policy.Allow, 1},
		{"domain wrong port falls to default", rules, flow(policy.TCP, "203.0.113.5:80"), policy.Allow, -1},
		{"suffix", rules, flow(policy.UDP, "203.0.113.6:1"), policy.Allow, 2},
		{"cidr mapped port range", rules, flow(policy.TCP, "10.1.2.3:8500"), policy.Allow, 3},
		{"cidr outside range", rules, flow(policy.TCP, "10.1.2.3:9001"), policy.Allow, -1},
		{"metadata any direction", rules, flow(policy.TCP, "169.254.169.254:80"), policy.Deny, 5},
		{"ingress rule", rules, policy.Flow{Direction: policy.Ingress, Protocol: policy.TCP, Remote: netip.MustParseAddrPort("1.2.3.4:5")}, policy.Allow, 4},
		{"icmp skips port rules", &policy.Policy{Rules: []policy.Rule{{Action: policy.Allow, Ports: []policy.PortRange{{First: 0, Last: 65535}}}}}, flow(policy.ICMPv4, "8.8.8.8:0"), policy.Deny, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.pol.Check(tc.f, env)
			if v.Action != tc.want || v.Rule != tc.rule {
				t.Errorf("Check(%+v) = %v rule %d, want %v rule %d", tc.f, v.Action, v.Rule, tc.want, tc.rule)
			}
		})
	}
}

func TestDomainRulesNeedResolution(t *testing.T) {
	p := &policy.Policy{Rules: []policy.Rule{{Action: policy.Allow, Destination: policy.Domain("example.com")}}}
	f := flow(policy.TCP, "203.0.113.5:443")
	if v := p.Check(f, policy.Env{}); v.Action != policy.Deny {
		t.Errorf("Check without resolution = %v, want deny", v.Action)
	}
	// Numeric-looking names are names, never addresses.
	p = &policy.Policy{Rules: []policy.Rule{{Action: policy.Allow, Destination: policy.Domain("2130706433")}}}
	if v := p.Check(flow(policy.TCP, "127.0.0.1:80"), policy.Env{}); v.Action != policy.Deny {
		t.Errorf("numeric domain rule matched an address")
	}
}

func TestCheckName(t *testing.T) {
	p := &policy.Policy{Rules: []policy.Rule{
		{Action: policy.Deny, Destination: policy.Domain("evil.com"), Ports: []policy.PortRange{policy.Port(443)}},
		{Action: policy.Deny, Destination: policy.DomainSuffix(".ads.example")},
		{Action: policy.Allow, Destination: policy.Domain("ok.ads.example")},
	}}
	for _, tc := range []struct {
		name string
		want policy.Action
	}{
		{"evil.com", policy.Allow}, // port-limited deny is enforced per flow
		{"ads.example", policy.Deny},
		{"X.Ads.Example.", policy.Deny},
		{"ok.ads.example", policy.Deny}, // first match wins
		{"badads.example", policy.Allow},
	} {
		if got := p.CheckName(tc.name).Action; got != tc.want {
			t.Errorf("CheckName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReachable(t *testing.T) {
	env := policy.Env{IsHost: isHost}
	p := &policy.Policy{Rules: append(policy.AllowDNS(),
		policy.Rule{Action: policy.Allow, Destination: policy.CIDR(netip.MustParsePrefix("10.5.0.0/16"))},
		policy.Rule{Action: policy.Allow, Destination: policy.InGroup(policy.GroupPublic)},
	)}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.5.1.1", true}, {"10.6.1.1", false}, {"127.0.0.1", false}, {"0.0.0.0", false},
		{"100.96.0.1", true}, // host group reachable via the DNS rule
		{"8.8.8.8", true},
	} {
		if got := p.Reachable(netip.MustParseAddr(tc.addr), env); got != tc.want {
			t.Errorf("Reachable(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if !policy.AllowAll().Reachable(netip.MustParseAddr("10.0.0.1"), env) {
		t.Errorf("AllowAll: private unreachable")
	}
}

func TestParseDestinationAndProfiles(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind policy.DestKind
		ok   bool
	}{
		{"*", policy.DestAny, true}, {"public", policy.DestGroup, true}, {"link-local", policy.DestGroup, true},
		{"1.1.1.1", policy.DestPrefix, true}, {"10.0.0.0/8", policy.DestPrefix, true},
		{".internal", policy.DestDomainSuffix, true}, {"api.example.com", policy.DestDomain, true},
		{".", 0, false}, {"a b", 0, false}, {"invalid", policy.DestDomain, true},
	} {
		d, err := policy.ParseDestination(tc.in)
		if (err == nil) != tc.ok || (tc.ok && d.Kind != tc.kind) {
			t.Errorf("ParseDestination(%q) = %+v, %v; want kind %v ok %v", tc.in, d, err, tc.kind, tc.ok)
		}
	}
	p, err := policy.FromProfiles(policy.ProfileHost, policy.ProfilePublic, policy.ProfileHost)
	if err != nil || len(p.Rules) != 3 || p.Rules[1].Destination.Group != policy.GroupPublic || p.Rules[2].Destination.Group != policy.GroupHost {
		t.Errorf("FromProfiles(host, public, host) = %+v, %v; want DNS, public, host", p, err)
	}
	if _, err := policy.FromProfiles(policy.Profile(9)); err == nil {
		t.Errorf("FromProfiles(9) succeeded")
	}
}

func TestCheckServerName(t *testing.T) {
	p := &policy.Policy{Rules: []policy.Rule{
		{Action: policy.Allow, Destination: policy.CIDR(netip.MustParsePrefix("0.0.0.0/0"))},
		{Action: policy.Allow, Destination: policy.Domain("api.example.com")},
		{Action: policy.Deny, Destination: policy.DomainSuffix("example.com")},
		{Action: policy.Deny, Destination: policy.Domain("web.test"), Ports: []policy.PortRange{policy.Port(443)}},
		{Action: policy.Allow, Destination: policy.Domain("udp.test"), Protocols: []policy.Protocol{policy.UDP}},
		{Action: policy.Deny, Direction: policy.Ingress, Destination: policy.Domain("in.test")},
	}}
	flow := func(port uint16) policy.Flow {
		return policy.Flow{Protocol: policy.TCP, Remote: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.1"), port)}
	}
	for _, tc := range []struct {
		name   string
		port   uint16
		ok     bool
		action policy.Action
		rule   int
	}{
		{"API.example.com.", 443, true, policy.Allow, 1},
		{"www.example.com", 443, true, policy.Deny, 2},
		{"example.com", 80, true, policy.Deny, 2},
		{"badexample.com", 443, false, policy.Deny, -1},
		{"web.test", 443, true, policy.Deny, 3},
		{"web.test", 8443, false, policy.Deny, -1},
		{"udp.test", 443, false, policy.Deny, -1},
		{"in.test", 443, false, policy.Deny, -1},
		{"", 443, false, policy.Deny, -1},
	} {
		v, ok := p.CheckServerName(tc.name, flow(tc.port))
		if ok != tc.ok || v.Action != tc.action || v.Rule != tc.rule {
			t.Errorf("CheckServerName(%q, port %d) = %+v, %v; want %v rule %d, %v", tc.name, tc.port, v, ok, tc.action, tc.rule, tc.ok)
		}
	}
	for _, tc := range []struct {
		port        uint16
		proto       policy.Protocol
		allow, deny bool
	}{
		{443, policy.TCP, true, true},
		{80, policy.TCP, true, true},
		{53, policy.UDP, true, true},
		{0, policy.ICMPv4, true, true},
	} {
		f := flow(tc.port)
		f.Protocol = tc.proto
		if a, d := p.DomainRules(f); a != tc.allow || d != tc.deny {
			t.Errorf("DomainRules(%v %d) = %v, %v; want %v, %v", tc.proto, tc.port, a, d, tc.allow, tc.deny)
		}
	}
	only := &policy.Policy{Rules: []policy.Rule{{Action: policy.Deny, Destination: policy.Domain("web.test"), Ports: []policy.PortRange{policy.Port(443)}}}}
	if a, d := only.DomainRules(flow(80)); a || d {
		t.Errorf("DomainRules(port 80) with only a port-443 rule = %v, %v", a, d)
	}
	if a, d := only.DomainRules(flow(443)); a || !d {
		t.Errorf("DomainRules(port 443) = %v, %v; want false, true", a, d)
	}
}
