// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
)

// Bounds on reading a guest's first bytes for a TLS ClientHello: a guest
// that sends less, or nothing, holds its flow at most this long.
const (
	sniPeekMax     = 16 << 10
	sniPeekTimeout = 5 * time.Second
)

// handleTCPSNI handles a guest TCP flow whose fate may depend on the TLS
// server name in its first bytes. allowed is the address verdict.
//
// Allowed flows are dialled and accepted first, so that protocols where
// the server speaks first are not delayed; the guest's first bytes are
// held back from the host until they are known not to be a ClientHello,
// or to be one whose name no deny rule matches.
//
// Denied flows are accepted but not dialled; the ClientHello's name may
// then allow them, if an allow domain rule matches it and the name,
// resolved by the sandbox DNS's upstream resolvers, includes the
// destination address. Otherwise the guest connection is reset.
func (s *Stack) handleTCPSNI(r *tcp.ForwarderRequest, dst netip.AddrPort, allowed bool) {
	if allowed {
		hc, err := s.dial("tcp", hostTarget(dst))
		if err != nil {
			s.stats.refusedFlows.Add(1)
			r.Complete(true)
			return
		}
		gc, ep, err := s.accept(r)
		if err != nil {
			hc.Close()
			return
		}
		s.stats.tcpFlows.Add(1)
		s.splice(gc, hc, func() ([]byte, bool) {
			hello, name := s.peekHello(gc)
			if name != "" && s.sniDenies(dst, name) {
				s.stats.sniDenied.Add(1)
				s.stats.deniedFlows.Add(1)
				ep.Abort()
				return nil, false
			}
			return hello, true
		})
		return
	}
	gc, ep, err := s.accept(r)
	if err != nil {
		return
	}
	untrack := s.track(gc)
	hello, name := s.peekHello(gc)
	untrack()
	if name == "" || s.sniDenies(dst, name) || !s.sniAllows(dst, name) {
		if name != "" {
			s.stats.sniDenied.Add(1)
		}
		s.stats.deniedFlows.Add(1)
		ep.Abort()
		gc.Close()
		return
	}
	hc, err := s.dial("tcp", hostTarget(dst))
	if err != nil {
		s.stats.refusedFlows.Add(1)
		ep.Abort()
		gc.Close()
		return
	}
	s.stats.sniAllowed.Add(1)
	s.stats.tcpFlows.Add(1)
	s.splice(gc, hc, func() ([]byte, bool) { return hello, true })
}

// peekHello reads the guest's first bytes until they hold a whole
// ClientHello, are known not to, reach sniPeekMax or sniPeekTimeout
// passes. It returns the bytes read, which the caller must forward, and
// the SNI host name if there is one.
func (s *Stack) peekHello(c net.Conn) (hello []byte, name string) {
	buf := make([]byte, sniPeekMax)
	n := 0
	c.SetReadDeadline(time.Now().Add(sniPeekTimeout))
	defer c.SetReadDeadline(time.Time{})
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if m > 0 {
			nm, st := parseClientHello(buf[:n], sniPeekMax)
			switch st {
			case helloDone:
				return buf[:n], nm
			case helloNotTLS:
				return buf[:n], ""
			}
		}
		if err != nil {
			break
		}
	}
	return buf[:n], ""
}

// sniDenies reports whether a deny domain rule decides a flow to dst by
// the server name the guest declared.
func (s *Stack) sniDenies(dst netip.AddrPort, name string) bool {
	v, ok := s.cfg.Policy.CheckServerName(name, egressFlow(policy.TCP, dst))
	return ok && v.Action == policy.Deny
}

// sniAllows reports whether an allow domain rule matches name and name
// resolves to dst's address: it asks the upstream resolvers for name
// (rebinding protection applies and the answers are pinned, as if the
// guest had asked) and checks the flow again.
func (s *Stack) sniAllows(dst netip.AddrPort, name string) bool {
	if v, ok := s.cfg.Policy.CheckServerName(name, egressFlow(policy.TCP, dst)); !ok || v.Action != policy.Allow {
		return false
	}
	if s.cfg.Policy.CheckName(name).Action != policy.Allow {
		return false
	}
	n, err := dnsmessage.NewName(name + ".")
	if err != nil {
		return false
	}
	qt := dnsmessage.TypeA
	if policy.Normalize(dst.Addr()).Is6() {
		qt = dnsmessage.TypeAAAA
	}
	q := dnsmessage.Question{Name: n, Type: qt, Class: dnsmessage.ClassINET}
	up, err := s.dns.forward(q)
	if err != nil {
		s.stats.dnsErrors.Add(1)
		return false
	}
	s.dns.filter(query{q: q, name: policy.NormalizeName(name)}, up)
	return s.egressAllowed(policy.TCP, dst)
}
