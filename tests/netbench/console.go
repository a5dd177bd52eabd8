// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds on what is kept of a guest's console: longer lines are skipped
// whole, and only the last lines are kept for error messages.
const (
	maxLine   = 4096
	tailLines = 40
)

// endGrace is how long a machine has to end by itself after the guest's
// done line before it is killed: the measurements are in, and QEMU's
// microvm, which has no i8042 reset line, takes minutes of emulated
// reboot attempts to get there.
const endGrace = 3 * time.Second

// guestReport is what the guest said on its console.
type guestReport struct {
	sample
	netError string
	done     bool
	tail     []string
}

// runConsole starts cmd, reads the guest's report from its stdout and
// waits for it to end, killing it after limit.
func runConsole(cmd *exec.Cmd, limit time.Duration) (*guestReport, error) {
	g := &guestReport{}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return g, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return g, err
	}
	var killed, ended atomic.Bool
	timer := time.AfterFunc(limit, func() {
		killed.Store(true)
		cmd.Process.Kill()
	})
	defer timer.Stop()
	var grace *time.Timer
	defer func() {
		if grace != nil {
			grace.Stop()
		}
	}()
	r := bufio.NewReaderSize(out, maxLine)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.ReadSlice('\n')
			}
		} else {
			g.parse(string(line))
			if g.done && grace == nil {
				grace = time.AfterFunc(endGrace, func() {
					ended.Store(true)
					cmd.Process.Kill()
				})
			}
			if g.ready == 0 && strings.Contains(string(line), "guestinit: ready") {
				g.ready = time.Since(start)
			}
		}
		if err != nil {
			break
		}
	}
	g.end = time.Since(start)
	err = cmd.Wait()
	switch {
	case killed.Load():
		return g, fmt.Errorf("killed after %v", limit)
	case err != nil && !ended.Load():
		return g, err
	case !g.done && g.netError == "":
		return g, errors.New("the guest ended without its done line")
	}
	return g, nil
}

// parse reads one console line, which the guest controls: only
// "guestinit: key=value" lines with known keys count, numbers must parse
// and be positive, and a key seen twice is an error.
func (g *guestReport) parse(line string) {
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	g.tail = append(g.tail, strconv.QuoteToASCII(line))
	if len(g.tail) > tailLines {
		g.tail = g.tail[1:]
	}
	kv, ok := strings.CutPrefix(line, "guestinit: ")
	if !ok {
		return
	}
	key, value, _ := strings.Cut(kv, "=")
	var field *int64
	switch key {
	case "net_bulk_bytes":
		field = &g.bulkBytes
	case "net_bulk_ns":
		field = &g.bulkNS
	case "net_conns":
		field = &g.conns
	case "net_conns_ns":
		field = &g.connsNS
	case "net_setup_ns":
		field = &g.setupNS
	case "net_error":
		if g.netError == "" {
			g.netError = strconv.QuoteToASCII(value)
		}
		return
	case "done":
		g.done = true
		return
	default:
		return
	}
	n, err := strconv.ParseInt(value, 10, 64)
	switch {
	case *field != 0:
		g.fail("%s reported twice", key)
	case err != nil || n <= 0:
		g.fail("%s=%q is not a positive number", key, value)
	default:
		*field = n
	}
}

func (g *guestReport) fail(format string, args ...any) {
	if g.netError == "" {
		g.netError = "(host) " + fmt.Sprintf(format, args...)
	}
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu sync.Mutex // guards b
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - 4096; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

var _ io.Writer = (*tailBuffer)(nil)
