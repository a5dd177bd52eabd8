// SPDX-License-Identifier: Apache-2.0

package host_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/guest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

// TestMain checks that the tests leave no goroutines or fds behind.
func TestMain(m *testing.M) {
	g0, fd0 := goroutines(), countFDs()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			g, fd := goroutines(), countFDs()
			if g <= g0 && fd <= fd0 {
				break
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				fmt.Fprintf(os.Stderr, "leak: goroutines %d -> %d, fds %d -> %d\n%s\n", g0, g, fd0, fd, buf[:runtime.Stack(buf, true)])
				code = 1
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	os.Exit(code)
}

// goroutines counts goroutines, less the os/signal loop that the fuzzing
// engine starts.
func goroutines() int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if !strings.Contains(g, "os/signal.signal_recv") {
			n++
		}
	}
	return n
}

func countFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// socketPair returns two connected Unix stream sockets.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

type env struct {
	client *host.Client
	srvErr chan error
}

// start serves a guest.Server over a socket pair and dials it. Cleanup
// closes the client and waits for the server.
func start(t testing.TB, scfg guest.Config, hcfg host.Config) *env {
	t.Helper()
	srv, err := guest.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{srvErr: make(chan error, 1)}
	go func() { e.srvErr <- srv.ServeConn(ctx, b) }()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	c, err := host.Dial(dctx, a, hcfg)
	if err != nil {
		cancel()
		<-e.srvErr
		t.Fatalf("Dial = %v", err)
	}
	e.client = c
	t.Cleanup(func() {
		c.Close()
		select {
		case err := <-e.srvErr:
			if err != nil {
				t.Errorf("ServeConn = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("server did not stop after the client closed")
		}
		cancel()
	})
	return e
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func run(t *testing.T, c *host.Client, cfg host.ExecConfig) *host.Output {
	t.Helper()
	out, err := c.Run(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Run(%q) = %v", cfg.Argv, err)
	}
	return out
}

func sh(script string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", script, "sh"}, args...)
}

func trimmed(b []byte) string { return strings.TrimSpace(string(b)) }
