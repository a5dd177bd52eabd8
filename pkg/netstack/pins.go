// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"net/netip"
	"sync"
	"time"
)

// Pin lifetimes: an answer's TTL clamped to [minPinTTL, maxPinTTL]. The
// floor covers resolvers that cache past a short TTL (glibc, the JVM);
// the ceiling keeps a long TTL from pinning an address for days.
const (
	minPinTTL = 60 * time.Second
	maxPinTTL = time.Hour
)

type pinKey struct {
	addr netip.Addr
	name string
}

// pinTable records which names the sandbox resolved to which addresses,
// so domain rules can match addresses. It holds at most max pairs; when
// full it drops expired pairs, else an arbitrary one.
type pinTable struct {
	max int
	now func() time.Time

	// mu guards byAddr and n.
	mu     sync.Mutex
	byAddr map[netip.Addr]map[string]time.Time
	n      int
}

func newPinTable(max int, now func() time.Time) *pinTable {
	return &pinTable{max: max, now: now, byAddr: make(map[netip.Addr]map[string]time.Time)}
}

// add pins name to addr for ttl (clamped).
func (t *pinTable) add(name string, addr netip.Addr, ttl time.Duration) {
	ttl = min(max(ttl, minPinTTL), maxPinTTL)
	now := t.now()
	exp := now.Add(ttl)
	t.mu.Lock()
	defer t.mu.Unlock()
	names := t.byAddr[addr]
	if old, ok := names[name]; ok {
		if exp.After(old) {
			names[name] = exp
		}
		return
	}
	if t.n >= t.max {
		t.evictLocked(now)
	}
	if names == nil {
		names = make(map[string]time.Time, 1)
		t.byAddr[addr] = names
	}
	names[name] = exp
	t.n++
}

// evictLocked frees at least one slot: every expired pair if there are
// any, else one arbitrary pair (map order), so a full table costs O(1)
// amortised per insert rather than a scan for the oldest.
func (t *pinTable) evictLocked(now time.Time) {
	var any pinKey
	found := false
	for a, names := range t.byAddr {
		for n, exp := range names {
			if !exp.After(now) {
				t.removeLocked(pinKey{a, n})
			} else if !found {
				any, found = pinKey{a, n}, true
			}
		}
	}
	if t.n >= t.max && found {
		t.removeLocked(any)
	}
}

func (t *pinTable) removeLocked(k pinKey) {
	names := t.byAddr[k.addr]
	if _, ok := names[k.name]; !ok {
		return
	}
	delete(names, k.name)
	if len(names) == 0 {
		delete(t.byAddr, k.addr)
	}
	t.n--
}

// names returns the unexpired names pinned to addr.
func (t *pinTable) names(addr netip.Addr) []string {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for n, exp := range t.byAddr[addr.Unmap()] {
		if exp.After(now) {
			out = append(out, n)
		}
	}
	return out
}

func (t *pinTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}
