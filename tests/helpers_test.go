// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"fmt"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
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
	rt := sandbox.DefaultRuntime()
	timer := time.AfterFunc(after, func() {
		d, err := sandbox.Diagnose(rt, name)
		if err != nil {
			t.Logf("diagnosis of %s after %v: %v", name, after, err)
			return
		}
		t.Logf("diagnosis of %s after %v (still running):\n%s", name, after, d)
	})
	t.Cleanup(func() { timer.Stop() })
	return func() { timer.Stop() }
}
