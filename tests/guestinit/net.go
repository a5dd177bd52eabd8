// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
)

// The net check's wire protocol with the host's sink (tests/netbench): a
// connection's first byte says what it is. A bulk connection sends netBulk
// and then exactly msb_net_mib MiB; the sink answers with 8 bytes, the
// payload length it counted (big endian). An echo connection sends
// netEcho and reads it back.
const (
	netBulk = 'B'
	netEcho = 'E'
)

// netTimeout bounds each step of the net check (the harness's nested,
// emulated machines are slow; the host bounds the whole run anyway).
const netTimeout = 5 * time.Minute

// checkNet configures eth0 from msb_net_addr (a prefix) and msb_net_gw,
// then times one bulk transfer of msb_net_mib MiB to msb_net_target and
// msb_net_conns short connections (connect, one byte each way, close).
// It reports net_setup_ns (eth0 set up and the first connection open),
// net_bulk_bytes, net_bulk_ns, net_conns and net_conns_ns, or net_error.
func checkNet() {
	if err := netCheck(); err != nil {
		report("net_error", "%v", err)
	}
}

func netCheck() error {
	addr, err := netip.ParsePrefix(param("msb_net_addr"))
	if err != nil {
		return fmt.Errorf("msb_net_addr: %w", err)
	}
	gw, err := netip.ParseAddr(param("msb_net_gw"))
	if err != nil {
		return fmt.Errorf("msb_net_gw: %w", err)
	}
	target, err := netip.ParseAddrPort(param("msb_net_target"))
	if err != nil {
		return fmt.Errorf("msb_net_target: %w", err)
	}
	mib, err := strconv.Atoi(param("msb_net_mib"))
	if err != nil || mib < 1 {
		return fmt.Errorf("msb_net_mib %q: want a positive number", param("msb_net_mib"))
	}
	conns, err := strconv.Atoi(param("msb_net_conns"))
	if err != nil || conns < 1 {
		return fmt.Errorf("msb_net_conns %q: want a positive number", param("msb_net_conns"))
	}
	setup := time.Now()
	if err := setupEth0(addr, gw); err != nil {
		return fmt.Errorf("eth0: %w", err)
	}

	// The first connection also waits for the link (ARP, carrier): it
	// is not timed.
	d := net.Dialer{Timeout: netTimeout}
	c, err := d.Dial("tcp", target.String())
	if err != nil {
		return fmt.Errorf("bulk dial: %w", err)
	}
	report("net_setup_ns", "%d", time.Since(setup).Nanoseconds())
	start := time.Now()
	n, err := sendBulk(c, int64(mib)<<20)
	elapsed := time.Since(start)
	c.Close()
	if err != nil {
		return fmt.Errorf("bulk: %w", err)
	}
	report("net_bulk_bytes", "%d", n)
	report("net_bulk_ns", "%d", elapsed.Nanoseconds())

	start = time.Now()
	for i := range conns {
		if err := echoOnce(&d, target); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	report("net_conns", "%d", conns)
	report("net_conns_ns", "%d", time.Since(start).Nanoseconds())
	return nil
}

// setupEth0 gives eth0 addr, brings it up and routes everything through
// gw. The driver has probed before init runs; the wait only bounds an
// unexpected delay.
func setupEth0(addr netip.Prefix, gw netip.Addr) error {
	var link netlink.Link
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if link, err = netlink.LinkByName("eth0"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(addr.Addr().AsSlice()),
		Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen()),
	}}
	if err := netlink.AddrAdd(link, a); err != nil {
		return fmt.Errorf("address %v: %w", addr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IP(gw.AsSlice())}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("default route via %v: %w", gw, err)
	}
	return nil
}

// sendBulk writes the bulk marker and size bytes to c and reads the
// sink's acknowledgement, which must count them all.
func sendBulk(c net.Conn, size int64) (int64, error) {
	c.SetDeadline(time.Now().Add(netTimeout))
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	if _, err := c.Write([]byte{netBulk}); err != nil {
		return 0, err
	}
	for left := size; left > 0; {
		n, err := c.Write(buf[:min(left, int64(len(buf)))])
		left -= int64(n)
		if err != nil {
			return size - left, err
		}
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return size, fmt.Errorf("ack: %w", err)
	}
	if got := binary.BigEndian.Uint64(ack[:]); got != uint64(size) {
		return size, fmt.Errorf("the sink counted %d bytes, want %d", got, size)
	}
	return size, nil
}

// echoOnce opens one connection to target, sends one byte, reads it back
// and closes.
func echoOnce(d *net.Dialer, target netip.AddrPort) error {
	c, err := d.Dial("tcp", target.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(netTimeout))
	if _, err := c.Write([]byte{netEcho}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != netEcho {
		return errors.New("echo: wrong byte")
	}
	return nil
}
