// SPDX-License-Identifier: Apache-2.0

// Package netstack provides a sandbox's user-mode network: a gVisor
// tcpip stack that terminates the guest's Ethernet frames and re-originates
// every allowed guest flow from an ordinary host socket.
//
// There is no TAP device, no root and no host NAT. The guest's virtio-net
// device hands each frame to [Stack.DeliverFrame]; frames for the guest go
// to [Config.WriteFrame]. The stack owns the gateway address (see
// [Gateway4]); the guest is configured statically with [Guest4]. For every
// new guest TCP connection or UDP session the stack asks the
// [policy.Policy] first and only then dials the real destination with
// [Config.Dial] (a net.Dialer by default) and splices both directions with
// bounded buffers. Denied TCP connections get a RST; denied UDP datagrams an
// ICMP port unreachable. The gateway address stands for the host: when the
// policy allows the host group, a flow to the gateway is dialled on the
// host's loopback (127.0.0.1 or ::1).
//
// ICMP echo: a guest echo request (ICMPv4, and ICMPv6 unless IPv6 is
// off) to the gateway is answered by the stack itself. To any other
// address it is checked against the policy as an ICMPv4 or ICMPv6 flow
// with port 0 (so rules that list ports never match it) and, when
// allowed, re-originated by a host ping socket ([Config.Ping], by default
// [ListenPing]): one session per guest address, destination and echo
// identifier, counted towards MaxFlows and ended after PingIdleTimeout
// without an echo either way. The host's replies are rebuilt as echo
// replies from the destination. Denied, invalid, multicast and in-subnet
// destinations get no reply at all (no ICMP unreachable), and the host
// sends nothing. gVisor reaches these requests through the ICMP transport
// protocols' default handlers: the protocols are registered, no ICMP
// endpoint is opened, and a handler that returns true stops gVisor from
// answering the echo itself (which IPv6 would otherwise do for every
// address of a promiscuous NIC). Other ICMP types from the guest are
// dropped.
//
// DNS: every UDP and TCP flow to port 53, whatever its destination address,
// is answered by the stack's own resolver, so no lookup bypasses it. The
// resolver forwards one sanitised question to the host's resolvers
// (/etc/resolv.conf, or [Config.DNSServers]), refuses names the policy
// denies (NXDOMAIN), drops answers that point at non-public addresses the
// policy does not reach (rebinding protection) and records which names
// resolved to which addresses, bounded and TTL-aware, so that domain rules
// can match the addresses the guest connects to. The name [HostName]
// resolves to the gateway.
//
// TLS server names: domain rules also match the SNI host name of a guest
// TCP flow's ClientHello, on any port, when the policy has a domain rule
// that applies to the flow's protocol and port. The first bytes of the
// guest's stream are read (at most 16 KiB, at most 5 s) and parsed by a
// bounds-checked parser; records that are not a TLS handshake end the
// peek at once. Among the domain rules that apply, the first matching the
// name decides, as [policy.Policy.CheckServerName] describes:
//   - A deny rule refuses the flow even when an address rule (a CIDR, a
//     group) allows the address, as a denied name never resolves through
//     the sandbox DNS either. Such flows are dialled and accepted first, so
//     server-first protocols are not delayed, but none of the guest's
//     bytes reach the host until the name is known; a denied flow is
//     reset and both sockets closed.
//   - An allow rule lets a flow the address rules deny through only when
//     the name, resolved by the stack through the upstream resolvers (with
//     rebinding protection, and pinned as if the guest had asked), includes
//     the destination address. A guest chooses its SNI freely, so the name
//     alone never opens an address. Such flows are accepted before they are
//     dialled: a refused one sees its handshake succeed and then a reset,
//     and a silent one holds its flow slot until the 5 s bound.
//
// Flows without a ClientHello, or whose ClientHello has no SNI or a
// malformed one, are decided by address alone. Encrypted ClientHello
// (ECH) hides the real name behind the outer one; only the outer name is
// seen.
//
// Trust boundary: every frame, every segment and every DNS query comes from
// a hostile guest. Frames are length-checked and copied before gVisor
// parses them; DNS messages are parsed with golang.org/x/net/dns/dnsmessage,
// and answers are rebuilt rather than forwarded. Guest-caused faults are
// dropped and counted in [Stats], never returned as errors. gVisor types
// never leave this package; tcpip.Error is converted to error at its edge.
//
// Goroutines: [New] starts none. [Stack.Start] creates the gVisor stack
// (which starts its own protocol workers) and one frame pump that writes
// frames to the guest. Each TCP flow runs in the goroutine gVisor's
// forwarder starts for it plus one copy goroutine; each UDP session runs in
// one goroutine plus one copy goroutine. Each published port ([Config.Ports])
// runs one accept or read loop; each forwarded connection runs like a TCP
// flow and each UDP peer session in one goroutine. Each ping session runs
// in two goroutines. [Stack.Close] stops the pump,
// closes every flow's sockets, waits for all of these goroutines and then
// for gVisor's; it is idempotent.
//
// Lock order: Stack.mu, then pinTable.mu. Neither is held while calling
// into gVisor, dialing, or calling Config.WriteFrame.
//
// Published ports: [Config.Ports] lists host sockets (TCP listeners, UDP
// sockets; 127.0.0.1 unless a bind address is given; port 0 picks one,
// reported by [Stack.PublishedPorts]) that Start binds. Each accepted
// connection, or each new UDP peer, is checked against the policy as an
// Ingress flow (remote: the peer's address with the guest port) and then
// forwarded from the gateway to Guest4 and the guest port; a guest that
// does not listen gets the host connection closed at once. UDP peers get
// one session each, ended after UDPIdleTimeout, at most 256 per port.
//
// Tests run in-process: package netstacktest builds a second gVisor stack
// that plays the guest, wired frame to frame to a Stack.
package netstack
