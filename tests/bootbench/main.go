// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command bootbench measures how fast a microVM boots with pkg/vmm against
// QEMU's microvm machine booting the same vmlinux and initramfs, in the same
// run and on the same KVM (make bench runs it inside the test harness).
//
// Each run starts a fresh process (this binary in -vm mode for ours, QEMU for
// the peer), and times from the process start to the guest's first console
// line and to the line guestinit prints first ("guestinit: ready"). It prints
// the medians and the ratio ours/QEMU; below 1.0 is faster than QEMU.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
	"github.com/microsandbox-go/microsandbox/tests/benchpeer"
	"github.com/microsandbox-go/microsandbox/tests/guestproto"
)

// guestArgs end the guest once it has printed its first line; ours also
// pings the host over vsock (QEMU's microvm here has no vsock to compare).
const guestArgs = "msb_end=reboot"

// vsockMarker is the line -vm mode prints when the guest's first vsock
// connection arrives.
const vsockMarker = "bootbench: vsock connected"

func main() {
	var (
		kernel  = flag.String("kernel", "vmlinux", "guest vmlinux")
		init    = flag.String("init", "guestinit", "static /init for the guest")
		runs    = flag.Int("runs", 7, "runs per VMM")
		sysroot = flag.String("qemu-sysroot", "qemu-sysroot", "directory holding qemu-system-x86_64, its libraries and firmware at their host paths")
		vmMode  = flag.Bool("vm", false, "internal: boot one machine with pkg/vmm, console on stdout")
		initrd  = flag.String("initrd", "", "internal: initramfs for -vm")
		memMiB  = flag.Int("mem", 128, "guest memory in MiB")
	)
	flag.Parse()
	if *vmMode {
		os.Exit(runVM(*kernel, *initrd, *memMiB))
	}
	if err := bench(*kernel, *init, *sysroot, *runs, *memMiB); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: %v\n", err)
		os.Exit(1)
	}
}

func runVM(kernel, initrd string, memMiB int) int {
	dev, err := vsock.New(vsock.Config{GuestCID: 3})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer dev.Close()
	ln, err := dev.Listen(guestproto.VsockHostPort)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	out := &lockedWriter{w: os.Stdout}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(out, "\n%s\n", vsockMarker)
		c.Close()
	}()
	m, err := vmm.New(vmm.Config{
		Kernel: kernel, Initrd: initrd, MemoryMiB: memMiB,
		Cmdline: guestArgs + " msb_checks=vsockping",
		Console: out, Devices: []virtio.Device{dev},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	exit, err := m.Run(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "vm: %v\n", exit)
	return 0
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type sample struct{ first, ready, vsock time.Duration }

func bench(kernel, init, sysroot string, runs, memMiB int) error {
	dir, err := os.MkdirTemp("", "bootbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := benchpeer.WriteInitramfs(initrd, init); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	kernel, _ = filepath.Abs(kernel)
	ours := func() *exec.Cmd {
		return exec.Command(self, "-vm", "-kernel", kernel, "-initrd", initrd, "-mem", fmt.Sprint(memMiB))
	}
	qemu, err := benchpeer.QEMU{Sysroot: sysroot, Kernel: kernel, Initrd: initrd, MemoryMiB: memMiB, Args: guestArgs}.Command()
	if err != nil {
		return err
	}

	var a, b []sample
	for i := range runs {
		// Alternate so that drift in the machine's speed hits both.
		s, err := measure(ours())
		if err == nil && s.vsock == 0 {
			err = errors.New("the guest's vsock connection never arrived")
		}
		if err != nil {
			return fmt.Errorf("ours, run %d: %w", i, err)
		}
		a = append(a, s)
		s, err = measure(qemu())
		if err != nil {
			return fmt.Errorf("qemu, run %d: %w", i, err)
		}
		b = append(b, s)
		fmt.Printf("run %d: ours first line %v ready %v vsock %v; qemu first line %v ready %v\n",
			i, a[i].first.Round(time.Millisecond), a[i].ready.Round(time.Millisecond), a[i].vsock.Round(time.Millisecond),
			b[i].first.Round(time.Millisecond), b[i].ready.Round(time.Millisecond))
	}
	report := func(name string, pick func(sample) time.Duration) {
		mo, mq := median(a, pick), median(b, pick)
		fmt.Printf("bench boot-to-%s: ours %v, qemu-microvm %v (medians of %d), ratio ours/qemu %.2f\n",
			name, mo.Round(time.Millisecond), mq.Round(time.Millisecond), runs, float64(mo)/float64(mq))
	}
	report("first-console-line", func(s sample) time.Duration { return s.first })
	report("init-ready", func(s sample) time.Duration { return s.ready })
	fmt.Printf("bench boot-to-first-vsock-connection: ours %v (median of %d; the QEMU peer has no vsock here)\n",
		median(a, func(s sample) time.Duration { return s.vsock }).Round(time.Millisecond), runs)
	return nil
}

// measure starts cmd and times its first output line and the guest's ready
// line, then waits for it to end (bounded).
func measure(cmd *exec.Cmd) (sample, error) {
	var s sample
	out, err := cmd.StdoutPipe()
	if err != nil {
		return s, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	timer := time.AfterFunc(5*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if s.first == 0 {
			s.first = time.Since(start)
		}
		if s.ready == 0 && strings.Contains(line, "guestinit: ready") {
			s.ready = time.Since(start)
		}
		if s.vsock == 0 && line == vsockMarker {
			s.vsock = time.Since(start)
		}
	}
	err = cmd.Wait()
	if s.ready == 0 {
		return s, errors.Join(errors.New("the guest never printed its ready line"), err, errors.New(stderr.String()))
	}
	return s, nil
}

func median(xs []sample, pick func(sample) time.Duration) time.Duration {
	v := make([]time.Duration, len(xs))
	for i, x := range xs {
		v[i] = pick(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}
