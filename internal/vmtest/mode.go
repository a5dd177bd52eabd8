// SPDX-License-Identifier: Apache-2.0

package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Mode says where test binaries run.
type Mode string

// Modes.
const (
	// Native runs the binary on the host: it has hardware virtualization.
	Native Mode = "native"
	// Nested runs the binary inside an L1 VM emulated by QEMU (TCG + SVM).
	Nested Mode = "nested"
)

// Environment variables of the harness.
const (
	// ModeEnv overrides mode detection: "native" or "nested".
	ModeEnv = "MSB_E2E_MODE"
	// SlowdownEnv carries the deadline factor to the tests (see Scale).
	SlowdownEnv = "MSB_E2E_SLOWDOWN"
)

// Slowdown factors per mode. Under TCG an L1 instruction costs tens of host
// instructions, and an L2 guest runs on top of that.
const (
	nativeSlowdown = 1
	nestedSlowdown = 30
)

var hwVirt = regexp.MustCompile(`(?m)^flags\s*:.*\b(vmx|svm)\b`)

// DetectMode returns the mode to use here: $MSB_E2E_MODE when set, else
// Native when /proc/cpuinfo shows vmx or svm and /dev/kvm opens, else Nested.
func DetectMode() (Mode, error) {
	switch m := Mode(os.Getenv(ModeEnv)); m {
	case Native, Nested:
		return m, nil
	case "":
	default:
		return "", fmt.Errorf("vmtest: %s=%q: want %q or %q", ModeEnv, m, Native, Nested)
	}
	if HardwareKVM() {
		return Native, nil
	}
	return Nested, nil
}

// HardwareKVM reports whether this machine's CPU flags show hardware
// virtualization and /dev/kvm opens read-write.
func HardwareKVM() bool {
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !hwVirt.Match(info) {
		return false
	}
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

func slowdownFor(m Mode) int {
	if m == Nested {
		return nestedSlowdown
	}
	return nativeSlowdown
}

// Slowdown returns the factor set by the harness, 1 when unset or invalid.
func Slowdown() int {
	f, err := strconv.Atoi(os.Getenv(SlowdownEnv))
	if err != nil || f < 1 {
		return 1
	}
	return f
}

// Scale stretches a deadline tuned for hardware KVM by the harness's slowdown
// factor.
func Scale(d time.Duration) time.Duration { return d * time.Duration(Slowdown()) }

// RequireKVM skips t, saying why, unless this machine can run a real guest:
// hardware virtualization and an openable /dev/kvm. Inside the nested
// harness's L1 VM that holds.
func RequireKVM(t testing.TB) {
	t.Helper()
	if !HardwareKVM() {
		info, _ := os.ReadFile("/proc/cpuinfo")
		why := "no vmx/svm flag in /proc/cpuinfo"
		if bytes.Contains(info, []byte(" svm")) || bytes.Contains(info, []byte(" vmx")) {
			why = "/dev/kvm does not open"
		}
		t.Skipf("needs hardware KVM (%s); run through the harness: make e2e", why)
	}
}
