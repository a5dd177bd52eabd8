// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/cpio"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm"
)

// Files the harness places in the run directory (see the Makefile's e2e).
const (
	kernelFile    = "vmlinux"
	guestInitFile = "guestinit"
)

func requireFile(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing from the run directory (run the e2e tests through make e2e): %v", name, err)
	}
	return p
}

// guestInitramfs builds an initramfs whose /init is guestinit.
func guestInitramfs(t *testing.T) string {
	t.Helper()
	init, err := os.ReadFile(requireFile(t, guestInitFile))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := cpio.NewWriter(f)
	for _, step := range []error{
		a.Dir("dev", 0o755),
		a.CharDevice("dev/console", 0o600, 5, 1),
		a.File("init", 0o755, init),
		a.Close(),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return path
}

// consoleLog collects the guest console and mirrors it to the test log.
type consoleLog struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *consoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *consoleLog) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.ReplaceAll(c.buf.String(), "\r", "")
}

// value returns the value of "guestinit: key=value" on the console.
func (c *consoleLog) value(key string) (string, bool) {
	m := regexp.MustCompile(`(?m)^guestinit: ` + regexp.QuoteMeta(key) + `=(.*)$`).FindStringSubmatch(c.String())
	if m == nil {
		return "", false
	}
	return m[1], true
}

func bootGuest(t *testing.T, cfg vmm.Config) (vmm.Exit, *consoleLog) {
	t.Helper()
	return bootGuestWith(t, cfg, &consoleLog{t: t}, vmtest.Scale(60*time.Second), nil)
}

// bootGuestWith boots guestinit with cfg, its console going to console, and
// returns how the machine ended. After timeout the machine is stopped;
// onTimeout, if set, runs first to report what was stuck.
func bootGuestWith(t *testing.T, cfg vmm.Config, console *consoleLog, timeout time.Duration, onTimeout func()) (vmm.Exit, *consoleLog) {
	t.Helper()
	cfg.Kernel = requireFile(t, kernelFile)
	cfg.Initrd = guestInitramfs(t)
	cfg.Console = console
	m, err := vmm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if onTimeout != nil {
		stop := context.AfterFunc(ctx, func() {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				onTimeout()
			}
		})
		defer stop()
	}
	start := time.Now()
	exit, err := m.Run(ctx)
	t.Logf("machine ended after %v: %v", time.Since(start).Round(time.Millisecond), exit)
	if err != nil {
		t.Fatalf("Run: %v\nconsole:\n%s", err, console.String())
	}
	return exit, console
}

// TestBootToInit boots the project's kernel with 2 vCPUs and 256 MiB and
// checks what the guest's /init sees.
func TestBootToInit(t *testing.T) {
	vmtest.RequireKVM(t)
	exit, console := bootGuest(t, vmm.Config{MemoryMiB: 256, VCPUs: 2})
	if _, ok := console.value("done"); !ok || exit.Reason != vmm.ExitReset {
		t.Fatalf("exit = %v, want reset after guestinit's report; console:\n%s", exit, console.String())
	}
	if got, _ := console.value("cpus_online"); got != "0-1" {
		t.Errorf("guest cpus online = %q, want 0-1", got)
	}
	kib, _ := console.value("memtotal_kib")
	var total int64
	if _, err := fmtSscan(kib, &total); err != nil || total < 200<<10 || total > 256<<10 {
		t.Errorf("guest MemTotal = %q KiB, want 200-256 MiB worth", kib)
	}
	t.Logf("guest: kernel %s\nconsole:\n%s", must(console.value("kernel")), console.String())
}

// TestGuestEndings checks that each way a guest ends its machine is
// reported as such: the power-off switch, a reboot, and a panic (PID 1
// exiting).
func TestGuestEndings(t *testing.T) {
	vmtest.RequireKVM(t)
	for _, c := range []struct {
		end  string
		want vmm.ExitReason
	}{
		{"poweroff", vmm.ExitPowerOff},
		{"reboot", vmm.ExitReset},
		{"exit", vmm.ExitPanic},
	} {
		t.Run(c.end, func(t *testing.T) {
			exit, console := bootGuest(t, vmm.Config{Cmdline: "msb_end=" + c.end})
			if exit.Reason != c.want {
				t.Fatalf("msb_end=%s: exit = %v, want %v; console:\n%s", c.end, exit, c.want, console.String())
			}
			if c.want == vmm.ExitPanic && !strings.Contains(exit.Detail, "Attempted to kill init") {
				t.Errorf("panic detail = %q, want the kill-init panic", exit.Detail)
			}
		})
	}
}

// TestStopDuringBoot stops real machines at points spread over their boot
// and checks that each Run returns promptly and nothing is left behind.
//
// It runs only with MSB_E2E_STOP_STRESS=1: in the nested harness, stopping
// a guest in early boot froze the whole L1 VM (QEMU TCG with emulated SVM)
// in 2 of about 6 runs, which would fail every CI run it hits. The native
// test in pkg/vmm stops 50 tiny guests at random points on every run.
func TestStopDuringBoot(t *testing.T) {
	if os.Getenv("MSB_E2E_STOP_STRESS") != "1" {
		t.Skip("set MSB_E2E_STOP_STRESS=1: stopping guests mid-boot can freeze the nested L1 VM (see the doc comment)")
	}
	vmtest.RequireKVM(t)
	kernel := requireFile(t, kernelFile)
	initrd := guestInitramfs(t)
	countFDs := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	fds, goroutines := countFDs(), runtime.NumGoroutine()
	const cycles = 10
	for i := range cycles {
		m, err := vmm.New(vmm.Config{Kernel: kernel, Initrd: initrd, VCPUs: 2, Cmdline: "msb_end=poweroff"})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan vmm.Exit, 1)
		go func() {
			exit, err := m.Run(context.Background())
			if err != nil {
				t.Error(err)
			}
			done <- exit
		}()
		// From the first instant to about the end of boot (~2 s nested).
		time.Sleep(time.Duration(i) * 200 * time.Millisecond)
		m.Stop()
		select {
		case exit := <-done:
			if exit.Reason != vmm.ExitStopped && exit.Reason != vmm.ExitPowerOff {
				t.Errorf("cycle %d: exit = %v, want stopped (or power-off if it finished first)", i, exit)
			}
		case <-time.After(vmtest.Scale(5 * time.Second)):
			t.Fatalf("cycle %d: Run still running after Stop", i)
		}
	}
	deadline := time.Now().Add(vmtest.Scale(time.Second))
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("goroutines: %d before, %d after %d stopped boots", goroutines, n, cycles)
	}
	if n := countFDs(); n > fds {
		t.Errorf("fds: %d before, %d after %d stopped boots", fds, n, cycles)
	}
}
