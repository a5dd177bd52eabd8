// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
)

// panicMarker starts the line Linux prints when it panics (kernel/panic.c).
var panicMarker = []byte("Kernel panic - not syncing")

// maxConsoleLine bounds the partial line panicWatch keeps: the guest
// decides how long its lines are.
const maxConsoleLine = 512

// panicWatch passes console output on and remembers the first kernel panic
// line. The guest can forge one, which only mislabels its own end.
type panicWatch struct {
	mu   sync.Mutex // guards line, and orders writes to out
	out  io.Writer
	seen *atomic.Pointer[string]
	line []byte
}

// Write implements io.Writer; vCPUs may call it concurrently.
func (w *panicWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		w.out.Write(p) // best effort: a slow log must not stop the guest
	}
	if w.seen.Load() != nil {
		return len(p), nil
	}
	for _, c := range p {
		if c == '\n' {
			if i := bytes.Index(w.line, panicMarker); i >= 0 {
				s := string(bytes.TrimRight(w.line[i:], "\r"))
				w.seen.CompareAndSwap(nil, &s)
			}
			w.line = w.line[:0]
			continue
		}
		if len(w.line) < maxConsoleLine {
			w.line = append(w.line, c)
		}
	}
	return len(p), nil
}
