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
	path := filepath.Join(sb.dir, runtimeLog)
	from := logSize(path)
	if err := sb.cmd.Process.Signal(diagnoseSignal); err != nil {
		return
	}
	awaitDiagnosis(path, from, sb.done)
}

// Diagnose asks the running sandbox name for a diagnosis and returns what
// it wrote to its runtime log, waiting at most diagnoseWait (a partial
// diagnosis when that ran out). It is for callers that did not start the
// sandbox and see an exec that does not return: tests and benchmarks. A
// sandbox whose process is gone is ErrNotRunning.
func Diagnose(rt Runtime, name string) (string, error) {
	st, err := Get(rt, name)
	if err != nil {
		return "", err
	}
	if st.Status.Terminal() || st.PID <= 0 {
		return "", fmt.Errorf("%w: %s (%s)", ErrNotRunning, name, st.Status)
	}
	path := filepath.Join(rt.sandboxDir(name), runtimeLog)
	from := logSize(path)
	if err := syscall.Kill(st.PID, diagnoseSignal); err != nil {
		return "", fmt.Errorf("diagnose %s: signal its process %d: %w", name, st.PID, err)
	}
	return string(awaitDiagnosis(path, from, nil)), nil
}

func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// awaitDiagnosis waits, at most diagnoseWait or until done is closed, for
// a diagnosis to end in the log at path past offset from, and returns what
// the log gained past from.
func awaitDiagnosis(path string, from int64, done <-chan struct{}) []byte {
	deadline := time.Now().Add(diagnoseWait)
	for {
		var tail []byte
		if b, err := os.ReadFile(path); err == nil && int64(len(b)) >= from {
			tail = b[from:]
		}
		if bytes.Contains(tail, []byte(diagnoseEnd)) || !time.Now().Before(deadline) {
			return tail
		}
		select {
		case <-done:
			return tail
		case <-time.After(50 * time.Millisecond):
		}
	}
}
