// SPDX-License-Identifier: Apache-2.0

package host_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/guest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

func TestExecRawBytes(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	out := run(t, e.client, host.ExecConfig{Argv: sh(`printf 'A\000B\377\376\n'; printf 'err\200' >&2; exit 3`)})
	if want := []byte("A\x00B\xff\xfe\n"); !bytes.Equal(out.Stdout, want) {
		t.Errorf("stdout = %q, want %q", out.Stdout, want)
	}
	if want := []byte("err\x80"); !bytes.Equal(out.Stderr, want) {
		t.Errorf("stderr = %q, want %q", out.Stderr, want)
	}
	if out.Status.Code != 3 || out.Status.Success() {
		t.Errorf("status = %+v, want code 3", out.Status)
	}
}

func TestExecEnvCwdArgv(t *testing.T) {
	dir := t.TempDir()
	e := start(t, guest.Config{Env: []string{"PATH=/usr/bin:/bin", "A=base", "B=base"}}, host.Config{})
	out := run(t, e.client, host.ExecConfig{
		Argv: sh(`printf '%s|%s|%s|%s' "$A" "$B" "$(pwd)" "$1"`, "two words; $(no shell)"),
		Env:  []string{"B=exec"},
		Dir:  dir,
	})
	if got, want := string(out.Stdout), "base|exec|"+dir+"|two words; $(no shell)"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	// PATH lookup uses the process's PATH.
	out = run(t, e.client, host.ExecConfig{Argv: []string{"echo", "hi"}})
	if trimmed(out.Stdout) != "hi" {
		t.Errorf("echo hi = %q", out.Stdout)
	}
}

// TestExecLargeOutput streams 1 GiB (8 MiB with -short) and checks a
// checksum and that the host's live heap stays bounded while it does.
func TestExecLargeOutput(t *testing.T) {
	size := 1 << 30
	if testing.Short() {
		size = 8 << 20
	}
	e := start(t, guest.Config{}, host.Config{})
	ctx := testCtx(t)
	p, err := e.client.Exec(ctx, host.ExecConfig{Argv: sh(fmt.Sprintf("yes 0123456789abcdef | head -c %d", size))})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h := sha256.New()
	n := 0
	var ms runtime.MemStats
	var peak uint64
	for {
		ev, err := p.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == host.EventExit {
			if !ev.Status.Success() {
				t.Fatalf("status = %+v", ev.Status)
			}
			break
		}
		h.Write(ev.Data)
		n += len(ev.Data)
		if n%(64<<20) < len(ev.Data) {
			// Live heap, not garbage awaiting the pacer: what the
			// client holds while the guest keeps sending.
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	want := sha256.Sum256(bytes.Repeat([]byte("0123456789abcdef\n"), size/17+1)[:size])
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("got %d bytes, sha %x; want %d bytes, sha %x", n, h.Sum(nil), size, want)
	}
	if peak > 64<<20 {
		t.Errorf("heap in use peaked at %d MiB while streaming", peak>>20)
	}
	t.Logf("%d MiB streamed, heap peak %d MiB", size>>20, peak>>20)
}

func TestExecStdinStreaming(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	ctx := testCtx(t)
	p, err := e.client.Exec(ctx, host.ExecConfig{Argv: []string{"cat"}, Stdin: host.StdinPipe})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var want bytes.Buffer
	done := make(chan error, 1)
	go func() {
		for i := range 200 {
			chunk := bytes.Repeat([]byte{byte(i), 0xff, '\n'}, 10000)
			want.Write(chunk)
			if _, err := p.WriteStdin(ctx, chunk); err != nil {
				done <- err
				return
			}
		}
		done <- p.CloseStdin(ctx)
	}()
	out, err := p.Output(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Stdout, want.Bytes()) || !out.Status.Success() {
		t.Errorf("cat returned %d bytes (status %+v), want %d bytes", len(out.Stdout), out.Status, want.Len())
	}

	out = run(t, e.client, host.ExecConfig{Argv: []string{"wc", "-c"}, Stdin: host.StdinBytes, StdinData: make([]byte, 3<<20)})
	if trimmed(out.Stdout) != strconv.Itoa(3<<20) {
		t.Errorf("wc -c of 3 MiB of StdinBytes = %q", out.Stdout)
	}
	out = run(t, e.client, host.ExecConfig{Argv: []string{"cat"}})
	if len(out.Stdout) != 0 || !out.Status.Success() {
		t.Errorf("cat with null stdin = %q, %+v", out.Stdout, out.Status)
	}
}

func TestExecConcurrent(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	var wg sync.WaitGroup
	const n = 64
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			out, err := e.client.Run(testCtx(t), host.ExecConfig{Argv: sh(`echo "$1"; echo "$1" >&2; exit $(($1 % 7))`, strconv.Itoa(i))})
			if err != nil {
				errs <- err
				return
			}
			if trimmed(out.Stdout) != strconv.Itoa(i) || trimmed(out.Stderr) != strconv.Itoa(i) || out.Status.Code != i%7 {
				errs <- fmt.Errorf("exec %d: stdout %q stderr %q status %+v", i, out.Stdout, out.Stderr, out.Status)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func procState(pid int) (byte, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, false
	}
	return b[i+2], true
}

// TestExecBackpressure: a host that does not read makes the writer block in
// the guest, and memory does not grow.
func TestExecBackpressure(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	ctx := testCtx(t)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	const size = 128 << 20
	p, err := e.client.Exec(ctx, host.ExecConfig{Argv: []string{"head", "-c", strconv.Itoa(size), "/dev/zero"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	time.Sleep(500 * time.Millisecond)
	st, alive := procState(p.PID())
	if !alive || st == 'Z' {
		t.Fatalf("writer finished (state %q) though nobody read its output", st)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grown := int64(ms.HeapInuse) - int64(before); grown > 16<<20 {
		t.Errorf("heap grew by %d MiB while the output was not read", grown>>20)
	}
	out, err := p.Output(ctx)
	if err != nil || len(out.Stdout) != size || !out.Status.Success() {
		t.Errorf("after reading: %d bytes, %+v, %v; want %d bytes", len(out.Stdout), out.Status, err, size)
	}
}

func TestExecTimeoutKillsGroup(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	ctx := testCtx(t)
	startT := time.Now()
	out, err := e.client.Run(ctx, host.ExecConfig{Argv: sh(`sleep 100 & echo $!; sleep 100; echo survived`), Timeout: 300 * time.Millisecond})
	if !errors.Is(err, guestagent.ErrTimeout) {
		t.Fatalf("Run = %v, want ErrTimeout", err)
	}
	if took := time.Since(startT); took > 20*time.Second {
		t.Errorf("took %v", took)
	}
	if out.Status.Code != -1 || out.Status.Signal != syscall.SIGKILL || !out.Status.TimedOut {
		t.Errorf("status = %+v, want -1, SIGKILL, timed out", out.Status)
	}
	child, err := strconv.Atoi(trimmed(out.Stdout))
	if err != nil {
		t.Fatalf("stdout %q: %v", out.Stdout, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, alive := procState(child)
		if !alive || st == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background child %d still running (state %q)", child, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecSignal(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	ctx := testCtx(t)
	p, err := e.client.Exec(ctx, host.ExecConfig{Argv: sh(`trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done`)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if ev, err := p.Recv(ctx); err != nil || trimmed(ev.Data) != "ready" {
		t.Fatalf("Recv = %q, %v", ev.Data, err)
	}
	if err := p.Signal(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The group gets the signal: the shell's trap runs (and the shell may
	// also report its sleep child killed by it).
	var got []byte
	for !strings.Contains(string(got), "got-usr1") {
		ev, err := p.Recv(ctx)
		if err != nil || ev.Kind == host.EventExit {
			t.Fatalf("Recv after SIGUSR1 = %+v, %v; output so far %q", ev, err, got)
		}
		got = append(got, ev.Data...)
	}
	if err := p.Signal(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(ctx)
	if err != nil || st.Code != -1 || st.Signal != syscall.SIGTERM || st.TimedOut {
		t.Errorf("Wait = %+v, %v; want -1, SIGTERM", st, err)
	}
	if _, err := p.Recv(ctx); err != io.EOF {
		t.Errorf("Recv after exit = %v, want io.EOF", err)
	}
}

func TestExecTTY(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	ctx := testCtx(t)
	p, err := e.client.Exec(ctx, host.ExecConfig{
		Argv: sh(`stty size; echo out; echo err >&2; read x; stty size`),
		TTY:  true, Rows: 30, Cols: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var got bytes.Buffer
	readUntil := func(s string) {
		t.Helper()
		for !strings.Contains(got.String(), s) {
			ev, err := p.Recv(ctx)
			if err != nil {
				t.Fatalf("Recv = %v; output so far %q", err, got.String())
			}
			if ev.Kind == host.EventStderr {
				t.Errorf("stderr event with a tty: %q", ev.Data)
			}
			got.Write(ev.Data)
		}
	}
	readUntil("err")
	if !strings.Contains(got.String(), "30 100") || !strings.Contains(got.String(), "out") {
		t.Errorf("output %q lacks the initial size 30 100", got.String())
	}
	if err := p.Resize(ctx, 40, 120); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WriteStdin(ctx, []byte("\n")); err != nil {
		t.Fatal(err)
	}
	readUntil("40 120")
	st, err := p.Wait(ctx)
	if err != nil || !st.Success() {
		t.Errorf("Wait = %+v, %v", st, err)
	}

	out := run(t, e.client, host.ExecConfig{Argv: sh(`stty size`), TTY: true})
	if trimmed(out.Stdout) != "24 80" {
		t.Errorf("default tty size = %q, want 24 80", out.Stdout)
	}
}

func TestExecSpawnErrors(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(garbage, []byte{0x7f, 'E', 'L', 'F', 0, 0, 0, 0}, 0o755); err != nil {
		t.Fatal(err)
	}
	e := start(t, guest.Config{Root: dir}, host.Config{})
	for _, tc := range []struct {
		name string
		cfg  host.ExecConfig
		want guestagent.SpawnKind
	}{
		{"missing path", host.ExecConfig{Argv: []string{"/no/such/program"}}, guestagent.SpawnNotFound},
		{"missing in PATH", host.ExecConfig{Argv: []string{"no-such-program-xyz"}}, guestagent.SpawnNotFound},
		{"not executable", host.ExecConfig{Argv: []string{noexec}}, guestagent.SpawnPermissionDenied},
		{"bad format", host.ExecConfig{Argv: []string{garbage}}, guestagent.SpawnNotExecutable},
		{"bad cwd", host.ExecConfig{Argv: []string{"true"}, Dir: "/no/such/dir"}, guestagent.SpawnBadCwd},
		{"cwd is a file", host.ExecConfig{Argv: []string{"true"}, Dir: noexec}, guestagent.SpawnBadCwd},
		{"unknown user", host.ExecConfig{Argv: []string{"true"}, User: "nosuchuser"}, guestagent.SpawnUserSetupFailed},
		{"empty argv", host.ExecConfig{}, guestagent.SpawnBadArgs},
		{"unknown rlimit", host.ExecConfig{Argv: []string{"true"}, Rlimits: []host.Rlimit{{Resource: "bogus"}}}, guestagent.SpawnResourceLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.Exec(testCtx(t), tc.cfg)
			var se *guestagent.SpawnError
			if !errors.As(err, &se) || !errors.Is(err, guestagent.ErrSpawn) || se.Kind != tc.want {
				t.Fatalf("Exec(%q) = %v, want a SpawnError of kind %s", tc.cfg.Argv, err, tc.want)
			}
		})
	}
}

func TestExecUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nextra:x:4242:nobody,other\nnogroup:x:65534:\n"), 0o644))
	e := start(t, guest.Config{Root: root}, host.Config{})
	for _, tc := range []struct{ user, want string }{
		{"nobody", "65534 65534 4242 65534 /nonexistent"},
		{"65534", "65534 65534 4242 65534 /nonexistent"},
		{"nobody:extra", "65534 4242 4242 /nonexistent"},
		{"1234:5678", "1234 5678 5678 /"},
	} {
		out := run(t, e.client, host.ExecConfig{Argv: sh(`echo $(id -u) $(id -g) $(id -G | tr ' ' '\n' | sort -n | uniq) $HOME`), User: tc.user})
		if got := trimmed(out.Stdout); got != tc.want {
			t.Errorf("user %q: id = %q, want %q (stderr %q)", tc.user, got, tc.want, out.Stderr)
		}
	}
}

func TestExecRlimits(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	out := run(t, e.client, host.ExecConfig{
		Argv:    sh(`ulimit -n; ulimit -Hn; ulimit -c`),
		Rlimits: []host.Rlimit{{Resource: "nofile", Soft: 123, Hard: 456}, {Resource: "core", Soft: 0, Hard: 0}},
	})
	if got := strings.Fields(string(out.Stdout)); strings.Join(got, " ") != "123 456 0" {
		t.Errorf("ulimit -n -Hn -c = %q, want 123 456 0 (stderr %q)", out.Stdout, out.Stderr)
	}
}

func TestExecCloseDoesNotKill(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	ctx := testCtx(t)
	dir := t.TempDir()
	mark := filepath.Join(dir, "mark")
	p, err := e.client.Exec(ctx, host.ExecConfig{Argv: sh(`yes | head -c 10000000; touch "$1"`, mark)})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(mark); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("process abandoned by Close did not run to its end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The connection still works.
	if out := run(t, e.client, host.ExecConfig{Argv: []string{"true"}}); !out.Status.Success() {
		t.Error("true failed after an abandoned exec")
	}
}
