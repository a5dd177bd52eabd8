// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

// setupLoopback brings lo up (the kernel creates it down).
func setupLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// setupNetwork configures n (validated by bootcfg.Parse): MTU, addresses,
// link up, then routes in order.
func setupNetwork(n *bootcfg.Network) error {
	link, err := netlink.LinkByName(n.Interface)
	if err != nil {
		return err
	}
	if n.MTU != 0 {
		if err := netlink.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("mtu %d: %w", n.MTU, err)
		}
	}
	for _, a := range n.Addresses {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
		if addr.IP.To4() == nil {
			// A static address on a link whose only other node is the
			// host's stack: duplicate address detection would only hold
			// the address (and routes through it) back for a second.
			addr.Flags |= unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("link up: %w", err)
	}
	for _, r := range n.Routes {
		route, err := netlinkRoute(link.Attrs().Index, r)
		if err != nil {
			return err
		}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("route %s via %q: %w", r.Destination, r.Gateway, err)
		}
	}
	return nil
}

// netlinkRoute converts r to a route on link index; a route without a
// gateway is on-link (scope link).
func netlinkRoute(index int, r bootcfg.Route) (*netlink.Route, error) {
	dst, err := bootcfg.RouteDestination(r)
	if err != nil {
		return nil, err
	}
	route := &netlink.Route{
		LinkIndex: index,
		Dst:       &net.IPNet{IP: net.IP(dst.Addr().AsSlice()), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
	}
	if r.Gateway == "" {
		route.Scope = netlink.SCOPE_LINK
	} else {
		route.Gw = net.IP(netip.MustParseAddr(r.Gateway).AsSlice()) // checked by RouteDestination
	}
	return route, nil
}
