// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"net/netip"
	"testing"
	"time"
)

func TestPinTableTTLAndBound(t *testing.T) {
	now := time.Unix(1000, 0)
	pt := newPinTable(3, func() time.Time { return now })
	a := netip.MustParseAddr("203.0.113.1")
	pt.add("a.test", a, time.Second) // clamped up to minPinTTL
	pt.add("b.test", a, 2*time.Hour) // clamped down to maxPinTTL
	if got := len(pt.names(a)); got != 2 {
		t.Fatalf("names = %d, want 2", got)
	}
	now = now.Add(minPinTTL + time.Second)
	if got := pt.names(a); len(got) != 1 || got[0] != "b.test" {
		t.Errorf("names after min TTL = %v, want [b.test]", got)
	}
	if got := pt.names(netip.MustParseAddr("::ffff:203.0.113.1")); len(got) != 1 {
		t.Errorf("mapped lookup = %v, want [b.test]", got)
	}
	for i := range 10 {
		pt.add("c.test", netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), time.Minute)
	}
	if n := pt.len(); n > 3 {
		t.Errorf("len = %d, want <= 3", n)
	}
	now = now.Add(maxPinTTL)
	if got := pt.names(a); len(got) != 0 {
		t.Errorf("names after max TTL = %v, want none", got)
	}
}
