// SPDX-License-Identifier: Apache-2.0

package netdev_test

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines of this module outlive the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if n := settleGoroutines(0, 5*time.Second); n > 0 {
			fmt.Fprintf(os.Stderr, "netdev: %d goroutines left after the tests:\n%s\n", n, goroutineStacks())
			code = 1
		}
	}
	os.Exit(code)
}

// ownGoroutines counts goroutines running code of this module, other than
// the caller's, so that the runtime's and the test framework's (os/signal
// under -fuzz, for one) do not count.
func ownGoroutines() int {
	n := 0
	for _, g := range strings.Split(goroutineStacks(), "\n\n")[1:] {
		if strings.Contains(g, "microsandbox-go/microsandbox/") && !strings.Contains(g, "testing.tRunner") {
			n++
		}
	}
	return n
}

func goroutineStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return string(bytes.TrimSpace(buf))
}

// settleGoroutines waits up to d for the number of this module's
// goroutines (see ownGoroutines) to fall to want and returns the last count.
func settleGoroutines(want int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := ownGoroutines()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}
