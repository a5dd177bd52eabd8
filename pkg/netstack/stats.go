// SPDX-License-Identifier: Apache-2.0

package netstack

import "sync/atomic"

// Stats is a snapshot of a Stack's counters. "From guest" is the guest's
// transmit direction (egress), "to guest" its receive direction.
type Stats struct {
	FramesFromGuest, BytesFromGuest uint64 // frames accepted by DeliverFrame
	FramesToGuest, BytesToGuest     uint64 // frames passed to WriteFrame
	FramesDropped                   uint64 // malformed, oversized or early/late frames from the guest

	TCPFlows, UDPFlows uint64 // flows re-originated on the host
	ICMPFlows          uint64 // guest ping sessions re-originated on the host
	DeniedFlows        uint64 // flows the policy refused
	RefusedFlows       uint64 // flows refused because of MaxFlows, a closed stack or a failed dial
	// TLS server names: flows denied by a deny domain rule matching their
	// SNI (also in DeniedFlows), and flows the address rules denied that
	// an allow domain rule matching their SNI let through.
	SNIDenied, SNIAllowed uint64
	// Published ports: TCP connections and UDP peer sessions forwarded to
	// the guest, and those the ingress policy refused. Ingress flows that
	// hit MaxFlows or find no guest listener count in RefusedFlows.
	IngressTCP, IngressUDP, IngressDenied uint64
	// Payload bytes relayed by allowed flows (DNS excluded), published
	// ports included.
	PayloadFromGuest, PayloadToGuest uint64

	DNSQueries   uint64 // queries parsed
	DNSDenied    uint64 // names the policy refused
	DNSRebinding uint64 // answer records dropped by rebinding protection
	DNSErrors    uint64 // malformed queries and failed upstream exchanges
}

type counters struct {
	framesFromGuest, bytesFromGuest  atomic.Uint64
	framesToGuest, bytesToGuest      atomic.Uint64
	framesDropped                    atomic.Uint64
	tcpFlows, udpFlows, icmpFlows    atomic.Uint64
	deniedFlows, refusedFlows        atomic.Uint64
	sniDenied, sniAllowed            atomic.Uint64
	payloadFromGuest, payloadToGuest atomic.Uint64
	ingressTCP, ingressUDP           atomic.Uint64
	ingressDenied                    atomic.Uint64
	dnsQueries, dnsDenied            atomic.Uint64
	dnsRebinding, dnsErrors          atomic.Uint64
}

// Stats returns the current counters. Safe for concurrent use.
func (s *Stack) Stats() Stats {
	c := &s.stats
	return Stats{
		FramesFromGuest: c.framesFromGuest.Load(), BytesFromGuest: c.bytesFromGuest.Load(),
		FramesToGuest: c.framesToGuest.Load(), BytesToGuest: c.bytesToGuest.Load(),
		FramesDropped: c.framesDropped.Load(),
		TCPFlows:      c.tcpFlows.Load(), UDPFlows: c.udpFlows.Load(), ICMPFlows: c.icmpFlows.Load(),
		DeniedFlows: c.deniedFlows.Load(), RefusedFlows: c.refusedFlows.Load(),
		SNIDenied: c.sniDenied.Load(), SNIAllowed: c.sniAllowed.Load(),
		IngressTCP: c.ingressTCP.Load(), IngressUDP: c.ingressUDP.Load(),
		IngressDenied:    c.ingressDenied.Load(),
		PayloadFromGuest: c.payloadFromGuest.Load(), PayloadToGuest: c.payloadToGuest.Load(),
		DNSQueries: c.dnsQueries.Load(), DNSDenied: c.dnsDenied.Load(),
		DNSRebinding: c.dnsRebinding.Load(), DNSErrors: c.dnsErrors.Load(),
	}
}
