// SPDX-License-Identifier: Apache-2.0

package vmtest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/vmtest"
)

// requireEnv makes a missing prerequisite fail instead of skip; make test
// sets it so that CI cannot pass by skipping.
const requireEnv = "MSB_VMTEST_REQUIRE"

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for ; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
	}
	t.Fatal("no go.mod above the test directory")
	return ""
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv(requireEnv) != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (set "+requireEnv+"=1 to fail instead)", args...)
}

var (
	innerOnce sync.Once
	innerBin  string
	innerErr  error
)

// innerBinary builds testdata/inner as a static test binary, once.
func innerBinary(t *testing.T) string {
	t.Helper()
	innerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vmtest-inner-")
		if err != nil {
			innerErr = err
			return
		}
		innerBin = filepath.Join(dir, "inner.test")
		cmd := exec.Command("go", "test", "-c", "-o", innerBin, "./testdata/inner")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			innerErr = errors.New(string(out))
		}
	})
	if innerErr != nil {
		t.Fatalf("build inner test binary: %v", innerErr)
	}
	return innerBin
}

// nestedConfig returns a nested-mode config using the assets that make
// builds under build/, or skips (fails under MSB_VMTEST_REQUIRE).
func nestedConfig(t *testing.T) vmtest.Config {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		skipOrFail(t, "qemu-system-x86_64 not installed")
	}
	root := repoRoot(t)
	cfg := vmtest.Config{
		Mode:  vmtest.Nested,
		L1Dir: filepath.Join(root, "build/l1"),
		Init:  filepath.Join(root, "build/l1init"),
	}
	for _, p := range []string{filepath.Join(cfg.L1Dir, "vmlinuz"), cfg.Init} {
		if _, err := os.Stat(p); err != nil {
			skipOrFail(t, "%s missing: run 'make l1 build/l1init'", p)
		}
	}
	return cfg
}

func TestNestedReportsPass(t *testing.T) {
	cfg := nestedConfig(t)
	var out bytes.Buffer
	cfg.Binary, cfg.Args, cfg.Output = innerBinary(t), []string{"-test.v", "-test.run=^TestPasses$"}, &out
	cfg.Timeout = 5 * time.Minute
	code, err := vmtest.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if code != 0 || !strings.Contains(out.String(), "--- PASS: TestPasses") {
		t.Fatalf("Run of a passing test = %d, want 0 and its PASS line; output:\n%s", code, out.String())
	}
}

func TestNestedReportsFailure(t *testing.T) {
	cfg := nestedConfig(t)
	var out bytes.Buffer
	cfg.Binary, cfg.Args, cfg.Output = innerBinary(t), []string{"-test.v", "-test.run=^TestFails$"}, &out
	cfg.Timeout = 5 * time.Minute
	code, err := vmtest.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if code != 1 || !strings.Contains(out.String(), "--- FAIL: TestFails") {
		t.Fatalf("Run of a failing test = %d, want 1 and its FAIL line; output:\n%s", code, out.String())
	}
}

func TestNestedTimeoutKillsQEMU(t *testing.T) {
	cfg := nestedConfig(t)
	var out bytes.Buffer
	cfg.Binary, cfg.Args, cfg.Output = innerBinary(t), []string{"-test.run=^TestHangs$"}, &out
	cfg.Timeout = 20 * time.Second
	start := time.Now()
	code, err := vmtest.Run(context.Background(), cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run of a hanging test = %d, %v; want a deadline error\n%s", code, err, out.String())
	}
	// The kill is bounded by QEMU's exit, WaitDelay included.
	if took := time.Since(start); took > cfg.Timeout+15*time.Second {
		t.Errorf("Run returned %v after its 20s timeout", took-cfg.Timeout)
	}
}

func TestNativeReportsStatus(t *testing.T) {
	bin := innerBinary(t)
	for _, c := range []struct {
		test string
		want int
	}{
		{"TestPasses", 0},
		{"TestFails", 1},
	} {
		var out bytes.Buffer
		code, err := vmtest.Run(context.Background(), vmtest.Config{
			Mode: vmtest.Native, Binary: bin, Args: []string{"-test.run=^" + c.test + "$"}, Output: &out,
		})
		if err != nil || code != c.want {
			t.Errorf("native Run(%s) = %d, %v; want %d\n%s", c.test, code, err, c.want, out.String())
		}
	}
}

func TestNativeFilesAndSlowdown(t *testing.T) {
	src := filepath.Join(t.TempDir(), "data.txt")
	if err := os.WriteFile(src, []byte("payload"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	// /bin/sh is dynamic: the static check must refuse it.
	_, err := vmtest.Run(context.Background(), vmtest.Config{Mode: vmtest.Native, Binary: "/bin/sh", Output: &out})
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("Run(/bin/sh) error = %v, want a dynamic-linking refusal", err)
	}
	_, err = vmtest.Run(context.Background(), vmtest.Config{
		Mode: vmtest.Native, Binary: innerBinary(t), Files: []vmtest.File{{Src: src, Dst: "../escape"}},
	})
	if err == nil {
		t.Error("Run with a file destination outside the run directory: got nil error")
	}
}

func TestDetectModeOverride(t *testing.T) {
	t.Setenv(vmtest.ModeEnv, "nested")
	if m, err := vmtest.DetectMode(); m != vmtest.Nested || err != nil {
		t.Errorf("DetectMode() with %s=nested = %q, %v", vmtest.ModeEnv, m, err)
	}
	t.Setenv(vmtest.ModeEnv, "bogus")
	if _, err := vmtest.DetectMode(); err == nil {
		t.Error("DetectMode() with a bogus mode: got nil error")
	}
}

func TestScale(t *testing.T) {
	t.Setenv(vmtest.SlowdownEnv, "30")
	if got := vmtest.Scale(time.Second); got != 30*time.Second {
		t.Errorf("Scale(1s) with slowdown 30 = %v", got)
	}
	t.Setenv(vmtest.SlowdownEnv, "junk")
	if got := vmtest.Scale(time.Second); got != time.Second {
		t.Errorf("Scale(1s) with a junk slowdown = %v, want 1s", got)
	}
}

// TestNestedCPUModelOverride checks that $MSB_E2E_CPU reaches QEMU and that
// Config.CPUModel wins over it: an unknown model makes QEMU refuse to start,
// naming it, within a second.
func TestNestedCPUModelOverride(t *testing.T) {
	cfg := nestedConfig(t)
	cfg.Binary, cfg.Timeout = innerBinary(t), time.Minute
	for _, c := range []struct{ env, field string }{
		{env: "no-such-cpu-model"},
		{env: vmtest.DefaultCPUModel, field: "no-such-cpu-model"},
	} {
		t.Setenv(vmtest.CPUEnv, c.env)
		var out bytes.Buffer
		cfg.CPUModel, cfg.Output = c.field, &out
		code, err := vmtest.Run(context.Background(), cfg)
		if err == nil || !strings.Contains(out.String(), "no-such-cpu-model") {
			t.Errorf("Run with %s=%q, CPUModel %q = %d, %v; want an error and QEMU naming the unknown model\n%s",
				vmtest.CPUEnv, c.env, c.field, code, err, out.String())
		}
	}
}
