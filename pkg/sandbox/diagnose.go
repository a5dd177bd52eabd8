// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm"
)

// diagnoseSignal asks a sandbox process for a diagnosis (diagnose).
const diagnoseSignal = syscall.SIGUSR2

// diagnoseWait bounds how long a creator waits for the diagnosis to reach
// the runtime log.
const diagnoseWait = 3 * time.Second

// diagnoseEnd ends a diagnosis in the runtime log, so that a reader knows
// it is complete.
const diagnoseEnd = "sandbox process: end of diagnosis"

// diagnose writes to w what a guest that stopped answering is doing: each
// vCPU's state (halted, running and where, or stuck in a host handler) and
// the stacks of this process's goroutines, grouped. It separates a guest
// that hangs from a host side that waits.
func diagnose(ctx context.Context, w io.Writer, m *vmm.Machine) {
	var b bytes.Buffer
	fmt.Fprintln(&b, "sandbox process: diagnosis requested")
	for _, s := range m.Inspect(ctx) {
		fmt.Fprintf(&b, "sandbox process: %v\n", s)
	}
	fmt.Fprintln(&b, "sandbox process: goroutines:")
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	fmt.Fprintln(&b, diagnoseEnd)
	w.Write(b.Bytes())
}

// requestDiagnosis asks the sandbox process for a diagnosis and waits, at
// most diagnoseWait, until it is in the runtime log. It is for a boot that
// timed out: the error then says what the guest and the host were doing.
func (sb *Sandbox) requestDiagnosis() {
	if sb.cmd == nil || sb.cmd.Process == nil {
		return
	}
	if err := sb.cmd.Process.Signal(diagnoseSignal); err != nil {
		return
	}
	path := filepath.Join(sb.dir, runtimeLog)
	deadline := time.Now().Add(diagnoseWait)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(diagnoseEnd)) {
			return
		}
		select {
		case <-sb.done:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
