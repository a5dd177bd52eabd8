// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command netbench measures guest→host TCP through our network path (a
// pkg/vmm virtio-net device bridged to a pkg/netstack stack under
// policy.AllowAll) against QEMU's user networking (slirp) behind the same
// virtio-net-over-MMIO device, in the same run, on the same KVM, kernel
// and initramfs (make bench runs it inside the test harness).
//
// The guest is tests/guestinit with its net check: it configures eth0,
// sends one bulk payload to a sink on the host's loopback (reached as the
// gateway, 100.96.0.1 for ours and 10.0.2.2 for slirp) and waits for its
// acknowledgement, then opens and closes short connections that echo one
// byte. It times both on its own clock and reports on the console; the
// sink checks what arrived and times the bulk payload on the host's clock
// too. Each run boots a fresh machine (this binary in -vm mode for ours,
// QEMU -M microvm for the peer), alternating. It prints the medians of
// MiB/s and connections/s and the ratios ours/slirp; above 1.0 is faster
// than slirp.
//
// The defaults (10 MiB, 50 connections, 3 runs each) keep the whole run
// to about four minutes inside the emulated nested harness, where a guest
// moves well under 1 MiB/s; raise -mib and -conns where KVM is hardware.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/netdev"
	"github.com/microsandbox-go/microsandbox/tests/benchpeer"
)

// Slirp's fixed addresses (QEMU's -netdev user defaults): the guest's
// usual address and the gateway that stands for the host.
const (
	slirpGuest = "10.0.2.15/24"
	slirpHost  = "10.0.2.2"
)

func main() {
	var (
		kernel    = flag.String("kernel", "vmlinux", "guest vmlinux")
		init      = flag.String("init", "guestinit", "static /init for the guest")
		runs      = flag.Int("runs", 3, "runs per network")
		sysroot   = flag.String("qemu-sysroot", "qemu-sysroot", "directory holding qemu-system-x86_64, its libraries and firmware at their host paths")
		mib       = flag.Int("mib", 10, "MiB the guest sends on its bulk connection")
		conns     = flag.Int("conns", 50, "short connections the guest opens")
		memMiB    = flag.Int("mem", 256, "guest memory in MiB")
		vmTimeout = flag.Duration("vm-timeout", 4*time.Minute, "limit for one machine's whole run")
		vmMode    = flag.Bool("vm", false, "internal: boot one machine with pkg/vmm and the user-mode network, console on stdout")
		initrd    = flag.String("initrd", "", "internal: initramfs for -vm")
		cmdline   = flag.String("cmdline", "", "internal: guest command line for -vm")
	)
	flag.Parse()
	if *vmMode {
		os.Exit(runVM(*kernel, *initrd, *cmdline, *memMiB, *vmTimeout))
	}
	if *runs < 1 || *mib < 1 || *conns < 1 || *memMiB < 1 {
		fmt.Fprintln(os.Stderr, "netbench: -runs, -mib, -conns and -mem must be positive")
		os.Exit(2)
	}
	if err := bench(config{
		kernel: *kernel, init: *init, sysroot: *sysroot,
		runs: *runs, mib: *mib, conns: *conns, memMiB: *memMiB, timeout: *vmTimeout,
	}); err != nil {
		fmt.Fprintf(os.Stderr, "netbench: %v\n", err)
		os.Exit(1)
	}
}

// runVM boots one machine whose virtio-net device is bridged to a
// netstack.Stack, wired as pkg/sandbox wires it.
func runVM(kernel, initrd, cmdline string, memMiB int, timeout time.Duration) int {
	var dev *netdev.Device
	stack, err := netstack.New(netstack.Config{
		Policy:      policy.AllowAll(),
		WriteFrame:  func(f []byte) { dev.Deliver(f) }, // a full rx queue drops; TCP retransmits
		DNSServers:  []netip.AddrPort{},                // no upstream: the benchmark resolves nothing
		DisableIPv6: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dev, err = netdev.New(netdev.Config{
		MAC:     net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56},
		Backend: netdev.BackendFunc(func(f []byte) error { stack.DeliverFrame(f); return nil }),
	})
	if err != nil {
		stack.Close()
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer dev.Close()
	defer stack.Close()
	if err := stack.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m, err := vmm.New(vmm.Config{
		Kernel: kernel, Initrd: initrd, MemoryMiB: memMiB, Cmdline: cmdline,
		Console: os.Stdout, Devices: []virtio.Device{dev},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	exit, err := m.Run(ctx)
	fmt.Fprintf(os.Stderr, "vm: %v; stack %+v\n", exit, stack.Stats())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type config struct {
	kernel, init, sysroot string
	runs, mib, conns      int
	memMiB                int
	timeout               time.Duration
}

// guestArgs are the guest's parameters for the net check: its address
// and gateway, and the sink at host:port as the guest reaches it.
func (c config) guestArgs(addr, gw string, port int) string {
	return fmt.Sprintf("msb_end=reboot msb_checks=net msb_net_addr=%s msb_net_gw=%s msb_net_target=%s:%d msb_net_mib=%d msb_net_conns=%d",
		addr, gw, gw, port, c.mib, c.conns)
}

func bench(c config) error {
	dir, err := os.MkdirTemp("", "netbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := benchpeer.WriteInitramfs(initrd, c.init); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	kernel, _ := filepath.Abs(c.kernel)
	s, err := newSink(int64(c.mib) << 20)
	if err != nil {
		return err
	}
	defer s.Close()

	ourPrefix := netip.PrefixFrom(netstack.Guest4, netstack.Subnet4.Bits()).String()
	ours := func() *exec.Cmd {
		return exec.Command(self, "-vm", "-kernel", kernel, "-initrd", initrd,
			"-mem", fmt.Sprint(c.memMiB), "-vm-timeout", c.timeout.String(),
			"-cmdline", c.guestArgs(ourPrefix, netstack.Gateway4.String(), s.port()))
	}
	// ACPI off: the guest kernel has no ACPI, so QEMU then puts the
	// virtio-mmio interrupts on the first IOAPIC and describes them in an
	// MP table and on the command line.
	qemu, err := benchpeer.QEMU{
		Sysroot: c.sysroot, Kernel: kernel, Initrd: initrd, MemoryMiB: c.memMiB, Machine: "acpi=off",
		Devices: []string{"-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"},
		Args:    c.guestArgs(slirpGuest, slirpHost, s.port()),
	}.Command()
	if err != nil {
		return err
	}

	var a, b []sample
	for i := range c.runs {
		// Alternate so that drift in the machine's speed hits both.
		x, err := c.measure(ours(), s)
		if err != nil {
			return fmt.Errorf("ours, run %d: %w", i, err)
		}
		a = append(a, x)
		y, err := c.measure(qemu(), s)
		if err != nil {
			return fmt.Errorf("qemu, run %d: %w", i, err)
		}
		b = append(b, y)
		fmt.Printf("run %d: ours %.1f MiB/s (host clock %.1f) %.1f conn/s [%v]; slirp %.1f MiB/s (host clock %.1f) %.1f conn/s [%v]\n",
			i, x.mibps(), x.hostMiBps(), x.connps(), x.phases(), y.mibps(), y.hostMiBps(), y.connps(), y.phases())
	}
	report := func(name, unit string, pick func(sample) float64) {
		mo, mq := median(a, pick), median(b, pick)
		fmt.Printf("bench %s: ours %.1f %s, qemu-slirp %.1f %s (medians of %d), ratio ours/slirp %.2f\n",
			name, mo, unit, mq, unit, c.runs, mo/mq)
	}
	report(fmt.Sprintf("net-tcp-bulk-%dMiB", c.mib), "MiB/s", sample.mibps)
	report(fmt.Sprintf("net-tcp-connections-%d", c.conns), "conn/s", sample.connps)
	return nil
}

// measure runs cmd to its end (bounded), reads the guest's results from
// its console and checks them against what the sink saw.
func (c config) measure(cmd *exec.Cmd, s *sink) (sample, error) {
	s.take() // whatever an earlier, failed run left
	var stderr tailBuffer
	cmd.Stderr = &stderr
	g, err := runConsole(cmd, c.timeout+30*time.Second)
	host := s.take()
	fail := func(err error) error {
		return fmt.Errorf("%w\nconsole tail:\n%s\nstderr tail:\n%s", err, strings.Join(g.tail, "\n"), stderr.String())
	}
	if err != nil {
		return sample{}, fail(err)
	}
	if g.netError != "" {
		return sample{}, fail(fmt.Errorf("guest: net_error=%s", g.netError))
	}
	want := sample{bulkBytes: int64(c.mib) << 20, conns: int64(c.conns)}
	switch {
	case g.bulkBytes != want.bulkBytes || g.bulkNS <= 0:
		return sample{}, fail(fmt.Errorf("guest reported %d bulk bytes in %d ns, want %d", g.bulkBytes, g.bulkNS, want.bulkBytes))
	case g.conns != want.conns || g.connsNS <= 0:
		return sample{}, fail(fmt.Errorf("guest reported %d connections in %d ns, want %d", g.conns, g.connsNS, want.conns))
	case len(host.errs) > 0:
		return sample{}, fail(fmt.Errorf("sink: %w", errors.Join(host.errs...)))
	case host.bulkBytes != want.bulkBytes || int64(host.echoes) != want.conns:
		return sample{}, fail(fmt.Errorf("sink saw %d bulk bytes and %d echo connections, want %d and %d",
			host.bulkBytes, host.echoes, want.bulkBytes, want.conns))
	}
	g.hostBulk = host.bulkTime
	return g.sample, nil
}

// sample is one run's results: the guest's, on its clock, and the bulk
// time on the host's.
type sample struct {
	bulkBytes, bulkNS int64
	conns, connsNS    int64
	hostBulk          time.Duration

	// Where the rest of the run's time went: the guest's eth0 set-up and
	// first connection (its clock), and on the host's clock the ready
	// line and the end of the console output.
	setupNS    int64
	ready, end time.Duration
}

func (s sample) mibps() float64 {
	return float64(s.bulkBytes) / (1 << 20) / (float64(s.bulkNS) / 1e9)
}

func (s sample) hostMiBps() float64 {
	return float64(s.bulkBytes) / (1 << 20) / s.hostBulk.Seconds()
}

// phases says where a run's time went.
func (s sample) phases() string {
	return fmt.Sprintf("ready %v, net setup %v, output ended %v",
		s.ready.Round(time.Millisecond), time.Duration(s.setupNS).Round(time.Millisecond), s.end.Round(time.Millisecond))
}

func (s sample) connps() float64 {
	return float64(s.conns) / (float64(s.connsNS) / 1e9)
}

func median(xs []sample, pick func(sample) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = pick(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}
