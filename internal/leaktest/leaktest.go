// SPDX-License-Identifier: Apache-2.0

package leaktest

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// modulePath marks the stack frames of this module's code.
const modulePath = "microsandbox-go/microsandbox/"

// Main runs the tests and fails the run if goroutines of this module are
// still running 5 s after they passed. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if n := Settle(0, 5*time.Second); n > 0 {
			fmt.Fprintf(os.Stderr, "leaktest: %d goroutines left after the tests:\n%s\n", n, Stacks())
			code = 1
		}
	}
	os.Exit(code)
}

// Count returns how many goroutines run code of this module, other than
// test functions themselves.
func Count() int {
	n := 0
	for _, g := range strings.Split(Stacks(), "\n\n")[1:] {
		if strings.Contains(g, modulePath) && !strings.Contains(g, "testing.tRunner") {
			n++
		}
	}
	return n
}

// Stacks returns the stacks of all goroutines, the caller's first.
func Stacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return string(bytes.TrimSpace(buf))
}

// Settle waits up to d for Count to fall to want and returns the last
// count.
func Settle(want int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := Count()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}
