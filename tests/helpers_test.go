// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func fmtSscan(s string, v any) (int, error) { return fmt.Sscan(s, v) }

func must(s string, _ bool) string { return s }

// diagnoseIfHung asks sandbox name's process for a diagnosis (vCPU states
// and host goroutines, pkg/sandbox's SIGUSR2) once the test has run past
// after from now, and logs the runtime log's new part: a test that hangs
// on a sandbox then says whether the guest or the host waits. It returns
// the function that cancels the watch; call it when the guarded part ends.
func diagnoseIfHung(t *testing.T, name string, after time.Duration) (cancel func()) {
	t.Helper()
	dir := filepath.Join(os.Getenv("MSB_HOME"), "sandboxes", name)
	timer := time.AfterFunc(after, func() {
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		var st struct {
			PID int `json:"pid"`
		}
		if err != nil || json.Unmarshal(b, &st) != nil || st.PID <= 0 {
			t.Logf("diagnosis of %s after %v: no sandbox process (%v)", name, after, err)
			return
		}
		logPath := filepath.Join(dir, "runtime.log")
		before, _ := os.ReadFile(logPath)
		if err := syscall.Kill(st.PID, syscall.SIGUSR2); err != nil {
			t.Logf("diagnosis of %s after %v: signal pid %d: %v", name, after, st.PID, err)
			return
		}
		time.Sleep(3 * time.Second)
		now, _ := os.ReadFile(logPath)
		if len(now) >= len(before) {
			now = now[len(before):]
		}
		t.Logf("diagnosis of %s after %v (still running):\n%s", name, after, now)
	})
	t.Cleanup(func() { timer.Stop() })
	return func() { timer.Stop() }
}
