// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
)

func TestSmoke(t *testing.T) {
	e := startEcho(t)
	fn := &fakeNet{}
	s, g := netstacktest.Connect(t, netstack.Config{Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	dst := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.10"), e.port)
	if err := tryTCP(context.Background(), g.DialTCP, dst); err != nil {
		t.Fatalf("tcp: %v", err)
	}
	if err := tryUDP(g.DialUDP, dst, 3, time.Second); err != nil {
		t.Fatalf("udp: %v", err)
	}
	dst6 := netip.AddrPortFrom(netip.MustParseAddr("2001:db8::10"), e.port)
	if err := tryTCP(context.Background(), g.DialTCP, dst6); err != nil {
		t.Fatalf("tcp6: %v", err)
	}
	t.Logf("dials %v stats %+v", fn.Dials(), s.Stats())
}
