// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"net/netip"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

func check(p *policy.Policy, dir policy.Direction, proto policy.Protocol, addr string, port uint16) policy.Action {
	env := policy.Env{IsHost: func(a netip.Addr) bool { return a == netip.MustParseAddr("100.96.0.1") }}
	return p.Check(policy.Flow{Direction: dir, Protocol: proto, Remote: netip.AddrPortFrom(netip.MustParseAddr(addr), port)}, env).Action
}

func TestNetworkPresets(t *testing.T) {
	for _, tt := range []struct {
		name string
		nc   *NetworkConfig
		addr string
		port uint16
		want policy.Action
	}{
		{"public allows public", NetworkPolicy.PublicOnly(), "1.1.1.1", 443, policy.Allow},
		{"public denies private", NetworkPolicy.PublicOnly(), "10.0.0.1", 80, policy.Deny},
		{"public denies metadata", NetworkPolicy.PublicOnly(), "169.254.169.254", 80, policy.Deny},
		{"public denies host", NetworkPolicy.PublicOnly(), "100.96.0.1", 8080, policy.Deny},
		{"public allows DNS", NetworkPolicy.PublicOnly(), "100.96.0.1", 53, policy.Allow},
		{"allow all allows host", NetworkPolicy.AllowAll(), "100.96.0.1", 8080, policy.Allow},
		{"private profile", NetworkPolicy.FromProfiles(NetworkProfilePrivate), "192.168.1.1", 22, policy.Allow},
		{"private profile denies public", NetworkPolicy.FromProfiles(NetworkProfilePrivate), "8.8.8.8", 443, policy.Deny},
		{"rules only default deny", &NetworkConfig{Rules: []PolicyRule{Rule.Allow("10.1.0.0/16")}}, "8.8.8.8", 443, policy.Deny},
		{"cidr rule", &NetworkConfig{Rules: []PolicyRule{Rule.Allow("10.1.0.0/16")}}, "10.1.2.3", 443, policy.Allow},
		{"port range", &NetworkConfig{Rules: []PolicyRule{{Action: PolicyActionAllow, Destination: "public", Port: "8000-9000"}}}, "8.8.8.8", 8443, policy.Allow},
		{"port range outside", &NetworkConfig{Rules: []PolicyRule{{Action: PolicyActionAllow, Destination: "public", Ports: []string{"8000-9000"}}}}, "8.8.8.8", 443, policy.Deny},
		{"first match wins", &NetworkConfig{DefaultEgress: PolicyActionAllow, Rules: []PolicyRule{Rule.Deny("1.1.1.1"), Rule.Allow("1.1.1.1")}}, "1.1.1.1", 53, policy.Deny},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, err := sandboxNetwork(&SandboxConfig{Network: tt.nc})
			if err != nil {
				t.Fatal(err)
			}
			if got := check(n.Policy, policy.Egress, policy.TCP, tt.addr, tt.port); got != tt.want {
				t.Errorf("egress tcp %s:%d = %v, want %v", tt.addr, tt.port, got, tt.want)
			}
		})
	}
}

func TestNetworkNoneAndPorts(t *testing.T) {
	n, err := sandboxNetwork(&SandboxConfig{Network: NetworkPolicy.None()})
	if err != nil || !n.Disabled {
		t.Fatalf("None = %+v, %v; want disabled", n, err)
	}
	c := SandboxConfig{}
	WithPorts(map[uint16]uint16{8080: 80, 8000: 8000})(&c)
	WithPortsUDP(map[uint16]uint16{5353: 53})(&c)
	WithPortBindings(PortBinding{Bind: "0.0.0.0", HostPort: 2222, GuestPort: 22})(&c)
	n, err = sandboxNetwork(&c)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Ports) != 4 || n.Ports[0].HostPort != 8000 || n.Ports[1].GuestPort != 80 ||
		n.Ports[2].Protocol != "udp" || n.Ports[3].Bind != "0.0.0.0" {
		t.Errorf("ports = %+v", n.Ports)
	}
}

func TestNetworkInvalid(t *testing.T) {
	for _, nc := range []*NetworkConfig{
		{DefaultEgress: "maybe"},
		{Rules: []PolicyRule{{Action: "allow", Direction: "sideways"}}},
		{Rules: []PolicyRule{{Action: "allow", Protocol: "sctp"}}},
		{Rules: []PolicyRule{{Action: "allow", Port: "0"}}},
		{Rules: []PolicyRule{{Action: "allow", Port: "9-1"}}},
		{Rules: []PolicyRule{{Action: "allow", Destination: "bad dest/x:"}}},
		{DNS: &DNSConfig{Nameservers: []string{"dns.example"}}},
	} {
		if _, err := sandboxNetwork(&SandboxConfig{Network: nc}); !IsKind(err, ErrInvalidConfig) {
			t.Errorf("%+v: err %v, want ErrInvalidConfig", nc, err)
		}
	}
	if _, err := NetworkPolicy.FromProfilesChecked("intranet"); !IsKind(err, ErrInvalidConfig) {
		t.Errorf("unknown profile: %v", err)
	}
}
