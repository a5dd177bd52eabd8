// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command l1init is /init of the nested test harness's L1 VM: it mounts the
// kernel filesystems, loads the KVM modules, brings up lo, runs the test
// binary described by /vmtest/config.json, prints its exit status on the
// console in the form the harness looks for, and powers the VM off.
//
// It is built static (CGO_ENABLED=0) and shares only the Config type with
// the harness.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/internal/vmtest/l1config"
)

func main() {
	code := run()
	// The harness reads this line; nothing after it matters.
	fmt.Printf("\n%s\n", l1config.ExitLine(os.Getenv(l1config.NonceEnv), code))
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(os.Stderr, "l1init: power off: %v\n", err)
	}
	select {} // PID 1 must not exit: that panics the kernel
}

func run() int {
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "l1init: %v\n", err)
		return l1config.SetupFailed
	}
	cfg, err := l1config.Load(l1config.Path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "l1init: %v\n", err)
		return l1config.SetupFailed
	}
	if err := loadModules(cfg.Modules, cfg.ModuleParams); err != nil {
		fmt.Fprintf(os.Stderr, "l1init: %v\n", err)
		return l1config.SetupFailed
	}
	reportKVMAMD()
	tuneMemory()
	if err := linkUp("lo"); err != nil {
		fmt.Fprintf(os.Stderr, "l1init: %v\n", err)
		return l1config.SetupFailed
	}
	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.Dir = cfg.Dir
	cmd.Env = cfg.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "l1init: start %s: %v\n", cfg.Argv[0], err)
		return l1config.SetupFailed
	}
	done := make(chan struct{})
	go alive(done)
	err = cmd.Wait()
	close(done)
	fmt.Fprintf(os.Stderr, "l1init: %s finished in %v\n", cfg.Argv[0], time.Since(start).Round(time.Millisecond))
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(os.Stderr, "l1init: killed by %v\n", ws.Signal())
			return 128 + int(ws.Signal())
		}
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "l1init: wait for %s: %v\n", cfg.Argv[0], err)
		return l1config.SetupFailed
	}
}

// alive prints the heartbeat the harness watches until done is closed.
func alive(done <-chan struct{}) {
	t := time.NewTicker(l1config.AliveInterval)
	defer t.Stop()
	line := "\n" + l1config.AliveLine(os.Getenv(l1config.NonceEnv)) + "\n"
	for {
		select {
		case <-done:
			return
		case <-t.C:
			os.Stdout.WriteString(line)
		}
	}
}

// reportKVMAMD prints the kvm-amd parameters that shape emulated nested
// SVM, so that a run's log says what its L1 ran with.
func reportKVMAMD() {
	var parts []string
	for _, name := range []string{"nested", "npt", "vgif", "vls", "avic", "lbrv", "nrips"} {
		if b, err := os.ReadFile("/sys/module/kvm_amd/parameters/" + name); err == nil {
			parts = append(parts, name+"="+strings.TrimSpace(string(b)))
		}
	}
	fmt.Printf("l1init: kvm_amd %s\n", strings.Join(parts, " "))
}

// tuneMemory keeps L1's memory management from moving the pages that back
// guest RAM: with transparent huge pages, khugepaged and compaction migrate
// them after a few VMs have come and gone, and under QEMU's emulated nested
// paging an L2 guest then intermittently triple-faulted in the middle of
// heavy I/O (never on a fresh L1). Best effort: a missing knob is skipped.
func tuneMemory() {
	for path, value := range map[string]string{
		"/sys/kernel/mm/transparent_hugepage/enabled": "never",
		"/sys/kernel/mm/transparent_hugepage/defrag":  "never",
		"/proc/sys/vm/compact_unevictable_allowed":    "0",
	} {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "l1init: %s: %v\n", path, err)
		}
	}
}

// setup mounts what a test binary expects of a Linux system.
func setup() error {
	for _, m := range []struct{ fstype, target string }{
		{"proc", "/proc"},
		{"sysfs", "/sys"},
		{"devtmpfs", "/dev"},
		{"tmpfs", "/tmp"},
		{"tmpfs", "/run"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

func loadModules(paths []string, params map[string]string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), params[filepath.Base(p)], 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load module %s: %w", p, err)
		}
	}
	return nil
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	return nil
}
