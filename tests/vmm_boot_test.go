// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
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
	return bootGuestWith(t, cfg, &consoleLog{t: t})
}

// bootGuestWith boots guestinit with cfg, its console going to console, and
// returns how the machine ended.
func bootGuestWith(t *testing.T, cfg vmm.Config, console *consoleLog) (vmm.Exit, *consoleLog) {
	t.Helper()
	cfg.Kernel = requireFile(t, kernelFile)
	cfg.Initrd = guestInitramfs(t)
	cfg.Console = console
	m, err := vmm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
	defer cancel()
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
