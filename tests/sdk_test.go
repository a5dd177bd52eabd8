// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/internal/leaktest"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
)

// createSandbox creates a small sandbox of the busybox image and stops it
// (ignoring errors) when the test ends.
func createSandbox(ctx context.Context, t *testing.T, name, image string, opts ...microsandbox.SandboxOption) *microsandbox.Sandbox {
	t.Helper()
	start := time.Now()
	opts = append([]microsandbox.SandboxOption{microsandbox.WithImage(image), microsandbox.WithMemory(256)}, opts...)
	sb, err := microsandbox.CreateSandbox(ctx, name, opts...)
	if err != nil {
		t.Fatalf("CreateSandbox(%s): %v", name, err)
	}
	t.Logf("created %s in %v", name, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { sb.Stop(context.Background()) })
	if deadline, ok := ctx.Deadline(); ok {
		// A sandbox the test still uses shortly before its deadline is
		// probably hung: say whether in the guest or in the host.
		diagnoseIfHung(t, name, time.Until(deadline)-20*time.Second)
	}
	return sb
}

func mustExec(ctx context.Context, t *testing.T, sb *microsandbox.Sandbox, cmd string, args ...string) string {
	t.Helper()
	out, err := sb.Exec(ctx, cmd, args)
	if err != nil {
		t.Fatalf("Exec(%s %q): %v", cmd, args, err)
	}
	if !out.Success() {
		t.Fatalf("Exec(%s %q): exit %d, stderr %q", cmd, args, out.ExitCode(), out.Stderr())
	}
	return out.Stdout()
}

func status(ctx context.Context, t *testing.T, name string) microsandbox.SandboxStatus {
	t.Helper()
	h, err := microsandbox.GetSandbox(ctx, name)
	if err != nil {
		t.Fatalf("GetSandbox(%s): %v", name, err)
	}
	return h.Status()
}

// TestSDKLifecycle drives a sandbox's life through the public API: list
// and labels, a connected handle that does not own it, Close of the owning
// handle stopping it, Start again, Kill, Replace, a detached sandbox that
// outlives its creator (msb create), and cancellation.
func TestSDKLifecycle(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*sandboxTestTimeout)
	defer cancel()
	goroutines, fds := leaktest.Count(), openFDs(t)

	sb := createSandbox(ctx, t, "life", image, microsandbox.WithLabels(map[string]string{"team": "a"}))
	page, err := microsandbox.ListSandboxesWith(ctx, microsandbox.WithListLabels(map[string]string{"team": "a"}))
	if err != nil || len(page.Sandboxes) != 1 || page.Sandboxes[0].Name() != "life" || page.Sandboxes[0].Status() != microsandbox.SandboxStatusRunning {
		t.Fatalf("ListSandboxesWith(team=a) = %+v, %v; want life running", page, err)
	}
	if page, err := microsandbox.ListSandboxesWith(ctx, microsandbox.WithListLabels(map[string]string{"team": "b"})); err != nil || len(page.Sandboxes) != 0 {
		t.Errorf("ListSandboxesWith(team=b) = %+v, %v; want none", page, err)
	}
	if _, err := microsandbox.ListSandboxesWith(ctx, microsandbox.WithListLimit(0)); !microsandbox.IsKind(err, microsandbox.ErrInvalidConfig) {
		t.Errorf("ListSandboxesWith(limit 0) = %v, want ErrInvalidConfig", err)
	}
	if own, err := sb.OwnsLifecycle(); !own || err != nil {
		t.Errorf("OwnsLifecycle of the creating handle = %v, %v; want true", own, err)
	}

	h, err := microsandbox.GetSandbox(ctx, "life")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := h.Connect(ctx)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if got := mustExec(ctx, t, conn, "echo", "connected"); got != "connected\n" {
		t.Errorf("Exec through Connect = %q", got)
	}
	if own, _ := conn.OwnsLifecycle(); own {
		t.Error("a connected handle owns the sandbox")
	}
	if err := conn.Close(); err != nil {
		t.Errorf("Close of the connected handle: %v", err)
	}
	if err := conn.Close(); !microsandbox.IsKind(err, microsandbox.ErrInvalidHandle) {
		t.Errorf("second Close = %v, want ErrInvalidHandle", err)
	}
	if _, err := conn.Exec(ctx, "true", nil); !microsandbox.IsKind(err, microsandbox.ErrInvalidHandle) {
		t.Errorf("Exec on a closed handle = %v, want ErrInvalidHandle", err)
	}
	if got := mustExec(ctx, t, sb, "echo", "still"); got != "still\n" {
		t.Errorf("the sandbox after closing a connected handle: %q", got)
	}

	// The default root disk is a managed disk: what is written survives a
	// stop and a start.
	if err := sb.FS().WriteString(ctx, "/root/persisted", "kept"); err != nil {
		t.Fatal(err)
	}
	// Closing the owning handle stops the sandbox; its record stays.
	if err := sb.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	res, err := microsandbox.GetSandbox(ctx, "life")
	if err != nil {
		t.Fatal(err)
	}
	stop, err := res.WaitUntilStopped(ctx)
	if err != nil || stop.Status != microsandbox.SandboxStatusStopped {
		t.Fatalf("WaitUntilStopped after Close = %+v, %v; want stopped", stop, err)
	}
	// The guest left its root disk's file system clean (ext4 superblock
	// s_state, offset 58: bit 0 is "valid").
	if state, err := ext4State(filepath.Join(os.Getenv("MSB_HOME"), "sandboxes", "life", "upper.ext4")); err != nil {
		t.Errorf("root disk: %v", err)
	} else if state&1 == 0 {
		t.Errorf("root disk superblock state %#x after a graceful stop: not clean", state)
	}
	if _, err := h.Ping(ctx); !microsandbox.IsKind(err, microsandbox.ErrSandboxNotRunning) {
		t.Errorf("Ping of a stopped sandbox = %v, want ErrSandboxNotRunning", err)
	}
	if s := status(ctx, t, "life"); s != microsandbox.SandboxStatusStopped {
		t.Errorf("Ping changed the status to %s", s)
	}

	// Start it again, then kill it.
	sb2, err := microsandbox.StartSandbox(ctx, "life")
	if err != nil {
		t.Fatalf("StartSandbox: %v", err)
	}
	if got := mustExec(ctx, t, sb2, "hostname"); got != "life\n" {
		t.Errorf("hostname after Start = %q", got)
	}
	if got, err := sb2.FS().ReadString(ctx, "/root/persisted"); got != "kept" || err != nil {
		t.Errorf("a file written before the stop, after Start: %q, %v; want \"kept\"", got, err)
	}
	if _, err := microsandbox.StartSandbox(ctx, "life"); !microsandbox.IsKind(err, microsandbox.ErrSandboxStillRunning) {
		t.Errorf("StartSandbox of a running sandbox = %v, want ErrSandboxStillRunning", err)
	}
	pid := sandboxPID(t, "life")
	if err := sb2.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("sandbox process after Kill: %v, want ESRCH", err)
	}
	if s := status(ctx, t, "life"); s != microsandbox.SandboxStatusStopped {
		t.Errorf("status after Kill = %s, want stopped", s)
	}

	// Replace: a stopped one, then a running one at once.
	sb3 := createSandbox(ctx, t, "life", image, microsandbox.WithReplace())
	pid3 := sandboxPID(t, "life")
	sb4 := createSandbox(ctx, t, "life", image, microsandbox.WithReplaceWithTimeout(0))
	if err := syscall.Kill(pid3, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("replaced sandbox process %d: %v, want ESRCH", pid3, err)
	}
	if _, err := sb3.Exec(ctx, "true", nil); !microsandbox.IsKind(err, microsandbox.ErrSandboxNotRunning) {
		t.Errorf("Exec on the replaced sandbox = %v, want ErrSandboxNotRunning", err)
	}
	if err := sb4.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	// A detached sandbox outlives the process that created it.
	msb := requireFile(t, "msb")
	out, err := exec.CommandContext(ctx, msb, "create", "-name", "detached", "-memory", "128", image).CombinedOutput()
	if err != nil {
		t.Fatalf("msb create: %v\n%s", err, out)
	}
	if s := status(ctx, t, "detached"); s != microsandbox.SandboxStatusRunning {
		t.Fatalf("detached sandbox after its creator exited: %s", s)
	}
	hd, _ := microsandbox.GetSandbox(ctx, "detached")
	d, err := hd.Connect(ctx)
	if err != nil {
		t.Fatalf("Connect to the detached sandbox: %v", err)
	}
	if got := mustExec(ctx, t, d, "echo", "detached"); got != "detached\n" {
		t.Errorf("Exec in the detached sandbox = %q", got)
	}
	d.Close()
	if err := hd.Stop(ctx); err != nil {
		t.Fatalf("Stop of the detached sandbox by handle: %v", err)
	}
	if s := status(ctx, t, "detached"); s != microsandbox.SandboxStatusStopped {
		t.Errorf("detached sandbox after Stop: %s", s)
	}

	// Idle timeout (Touch resets it) and max duration stop sandboxes on
	// their own.
	idle := createSandbox(ctx, t, "idle", image, microsandbox.WithMemory(128), microsandbox.WithIdleTimeout(3*time.Second))
	r1, err1 := idle.Touch(ctx)
	r2, err2 := idle.Touch(ctx)
	if err1 != nil || err2 != nil || r1.ActivitySeq == 0 || r2.ActivitySeq != r1.ActivitySeq+1 {
		t.Errorf("Touch twice = %+v %v, %+v %v; want growing sequence numbers", r1, err1, r2, err2)
	}
	maxd := createSandbox(ctx, t, "maxd", image, microsandbox.WithMemory(128), microsandbox.WithMaxDuration(3*time.Second))
	for _, sb := range []*microsandbox.Sandbox{idle, maxd} {
		wctx, wcancel := context.WithTimeout(ctx, vmtest.Scale(60*time.Second))
		res, err := sb.WaitUntilStopped(wctx)
		wcancel()
		if err != nil || res.Status != microsandbox.SandboxStatusStopped {
			t.Errorf("%s: WaitUntilStopped = %+v, %v; want stopped on its own", sb.Name(), res, err)
		}
	}
	if _, err := idle.Touch(ctx); !microsandbox.IsKind(err, microsandbox.ErrSandboxNotRunning) {
		t.Errorf("Touch of a stopped sandbox = %v, want ErrSandboxNotRunning", err)
	}

	// Drain: no new processes; the sandbox stops when the running one ends.
	dr := createSandbox(ctx, t, "drain", image, microsandbox.WithMemory(128))
	running, err := dr.ShellStream(ctx, "read line; echo finished $line", microsandbox.WithExecStdinPipe())
	if err != nil {
		t.Fatal(err)
	}
	if err := dr.RequestDrain(ctx); err != nil {
		t.Fatalf("RequestDrain: %v", err)
	}
	deadline := time.Now().Add(vmtest.Scale(10 * time.Second))
	for status(ctx, t, "drain") != microsandbox.SandboxStatusDraining && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := status(ctx, t, "drain"); s != microsandbox.SandboxStatusDraining {
		t.Errorf("status after RequestDrain = %s, want draining", s)
	}
	var execErr error
	for time.Now().Before(deadline) { // the guest learns of the drain asynchronously
		if _, execErr = dr.Exec(ctx, "true", nil); execErr != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if execErr == nil {
		t.Error("Exec kept working in a draining sandbox")
	}
	in := running.TakeStdin()
	in.Write([]byte("ok\n"))
	if out, err := running.Collect(ctx); err != nil || out.Stdout() != "finished ok\n" {
		t.Errorf("the running command during the drain: %v, %v", out, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, vmtest.Scale(60*time.Second))
	dres, err := dr.WaitUntilStopped(wctx)
	wcancel()
	if err != nil || dres.Status != microsandbox.SandboxStatusStopped {
		t.Errorf("after the drain: %+v, %v; want stopped", dres, err)
	}

	// Cancellation returns promptly with "context canceled".
	cctx, ccancel := context.WithCancel(ctx)
	go func() { time.Sleep(200 * time.Millisecond); ccancel() }()
	start := time.Now()
	_, err = microsandbox.CreateSandbox(cctx, "cancelled", microsandbox.WithImage(image), microsandbox.WithMemory(128))
	if !microsandbox.IsKind(err, microsandbox.ErrCancelled) || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("CreateSandbox with a cancelled ctx = %v, want ErrCancelled with \"context canceled\"", err)
	}
	if d := time.Since(start); d > vmtest.Scale(5*time.Second) {
		t.Errorf("cancelled CreateSandbox took %v", d)
	}
	if _, err := microsandbox.GetSandbox(ctx, "cancelled"); !microsandbox.IsKind(err, microsandbox.ErrSandboxNotFound) {
		t.Errorf("a cancelled create left a record: %v", err)
	}

	// Every sandbox of this test has ended: their handles' goroutines and
	// descriptors are gone from this process.
	for _, s := range []*microsandbox.Sandbox{sb3, idle, maxd, dr} {
		s.Stop(ctx)
	}
	if n := leaktest.Settle(goroutines, 5*time.Second); n > goroutines {
		t.Errorf("%d goroutines of this module before the sandboxes, %d after:\n%s", goroutines, n, leaktest.Stacks())
	}
	if n := openFDs(t); n > fds {
		t.Errorf("%d open descriptors before the sandboxes, %d after", fds, n)
	}
}

// ext4State reads s_state from the ext4 superblock of the image at path.
func ext4State(path string) (uint16, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, 1024+58); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestSDKOperations covers streaming exec, the file system and metrics on
// one sandbox.
func TestSDKOperations(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()
	sb := createSandbox(ctx, t, "ops", image, microsandbox.WithCPUs(2),
		microsandbox.WithScripts(map[string]string{"greet": "#!/bin/sh\necho \"hello $1 from a script\"\n"}))

	t.Run("scripts", func(t *testing.T) {
		if got := mustExec(ctx, t, sb, "greet", "you"); got != "hello you from a script\n" {
			t.Errorf("script greet = %q", got)
		}
	})
	t.Run("env union", func(t *testing.T) {
		// The image's PATH with the scripts directory first, overlaid by
		// the exec's own variables.
		out, err := sb.Shell(ctx, "echo $PATH; echo $ONLY_EXEC", microsandbox.WithExecEnv(map[string]string{"ONLY_EXEC": "x"}))
		if err != nil || !strings.HasPrefix(out.Stdout(), "/.msb/scripts:") || !strings.HasSuffix(out.Stdout(), "\nx\n") {
			t.Errorf("env = %q, %v", out.Stdout(), err)
		}
	})

	t.Run("stream events", func(t *testing.T) {
		h, err := sb.ShellStream(ctx, "echo out; echo err >&2; exit 4")
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		var kinds []microsandbox.ExecEventKind
		var stdout, stderr []byte
		code := 0
		for {
			ev, err := h.Recv(ctx)
			if err != nil {
				t.Fatal(err)
			}
			kinds = append(kinds, ev.Kind)
			switch ev.Kind {
			case microsandbox.ExecEventStarted:
				if ev.PID == 0 {
					t.Error("Started without a pid")
				}
			case microsandbox.ExecEventStdout:
				stdout = append(stdout, ev.Data...)
			case microsandbox.ExecEventStderr:
				stderr = append(stderr, ev.Data...)
			case microsandbox.ExecEventExited:
				code = ev.ExitCode
			}
			if ev.Kind == microsandbox.ExecEventDone {
				break
			}
		}
		if kinds[0] != microsandbox.ExecEventStarted || kinds[len(kinds)-2] != microsandbox.ExecEventExited ||
			string(stdout) != "out\n" || string(stderr) != "err\n" || code != 4 {
			t.Errorf("events %v, stdout %q, stderr %q, code %d", kinds, stdout, stderr, code)
		}
	})
	t.Run("stdin pipe", func(t *testing.T) {
		h, err := sb.ExecStream(ctx, "sha256sum", nil, microsandbox.WithExecStdinPipe())
		if err != nil {
			t.Fatal(err)
		}
		in := h.TakeStdin()
		if in == nil || h.TakeStdin() != nil {
			t.Fatal("TakeStdin: want the sink once")
		}
		data := make([]byte, 1<<20)
		rand.Read(data)
		go func() {
			in.Write(data)
			in.Close()
		}()
		out, err := h.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if !strings.HasPrefix(out.Stdout(), hex.EncodeToString(sum[:])) {
			t.Errorf("sha256sum of 1 MiB of stdin = %q, want %x", out.Stdout(), sum)
		}
	})
	t.Run("tty", func(t *testing.T) {
		h, err := sb.ShellStream(ctx, "stty size; tty; echo to-stderr >&2", microsandbox.WithExecTTY(true))
		if err != nil {
			t.Fatal(err)
		}
		out, err := h.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := out.Stdout()
		if !strings.Contains(s, "24 80") || !strings.Contains(s, "/dev/pts/") || !strings.Contains(s, "to-stderr") || out.Stderr() != "" {
			t.Errorf("tty stdout %q stderr %q; want 24 80, a pts and stderr merged", s, out.Stderr())
		}
	})
	t.Run("kill", func(t *testing.T) {
		h, err := sb.ExecStream(ctx, "sleep", []string{"100"})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := h.Recv(ctx); err != nil || ev.Kind != microsandbox.ExecEventStarted {
			t.Fatalf("first event %+v, %v", ev, err)
		}
		if err := h.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		code, err := h.Wait(ctx)
		if err != nil || code != -1 {
			t.Errorf("Wait after Kill = %d, %v; want -1", code, err)
		}
	})
	t.Run("spawn failure streamed", func(t *testing.T) {
		h, err := sb.ExecStream(ctx, "/no/such/program", nil)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := h.Recv(ctx)
		if err != nil || ev.Kind != microsandbox.ExecEventFailed || ev.Failure.Kind != "not_found" {
			t.Errorf("first event = %+v, %v; want Failed not_found", ev, err)
		}
		if ev, _ := h.Recv(ctx); ev == nil || ev.Kind != microsandbox.ExecEventDone {
			t.Errorf("after Failed: %+v, want Done", ev)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		_, err := sb.Exec(ctx, "sleep", []string{"30"}, microsandbox.WithExecTimeout(time.Second))
		if !microsandbox.IsKind(err, microsandbox.ErrExecTimeout) {
			t.Errorf("Exec past its timeout = %v, want ErrExecTimeout", err)
		}
		if d := time.Since(start); d > vmtest.Scale(10*time.Second) {
			t.Errorf("timeout took %v", d)
		}
	})
	t.Run("10 MiB binary output", func(t *testing.T) {
		mustExec(ctx, t, sb, "dd", "if=/dev/urandom", "of=/tmp/rand", "bs=1048576", "count=10")
		want := strings.Fields(mustExec(ctx, t, sb, "sha256sum", "/tmp/rand"))[0]
		out, err := sb.Exec(ctx, "cat", []string{"/tmp/rand"})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(out.StdoutBytes())
		if len(out.StdoutBytes()) != 10<<20 || hex.EncodeToString(sum[:]) != want {
			t.Errorf("cat of 10 MiB: %d bytes, sha256 %x; want %d bytes, %s", len(out.StdoutBytes()), sum, 10<<20, want)
		}
	})
	t.Run("8 concurrent execs", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				want := fmt.Sprintf("exec-%d", i)
				out, err := sb.Shell(ctx, "sleep 0.2; echo "+want)
				if err != nil || out.Stdout() != want+"\n" {
					t.Errorf("exec %d = %v, %v", i, out, err)
				}
			})
		}
		wg.Wait()
	})

	t.Run("msb shell", func(t *testing.T) {
		master, slave := openPTY(t, 30, 100)
		cmd := exec.CommandContext(ctx, requireFile(t, "msb"), "shell", "ops")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		slave.Close()
		var out bytes.Buffer
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			io.Copy(&out, master) // ends with EIO once msb exits
		}()
		// Raw mode: the guest terminal turns CR into NL.
		if _, err := master.Write([]byte("stty size; echo hi-$((40+2)); exit 3\r")); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		master.Close()
		<-readDone
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("msb shell: %v, want exit status 3; output %q", err, out.String())
		}
		if !strings.Contains(out.String(), "30 100") || !strings.Contains(out.String(), "hi-42") {
			t.Errorf("msb shell output %q: want the terminal size 30 100 and hi-42", out.String())
		}
	})

	fsys := sb.FS()
	t.Run("fs", func(t *testing.T) {
		data := make([]byte, 3<<20)
		rand.Read(data)
		if err := fsys.Write(ctx, "/data/a/b/blob", data); err != nil {
			t.Fatalf("Write 3 MiB: %v", err)
		}
		got, err := fsys.Read(ctx, "/data/a/b/blob")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Read 3 MiB: %d bytes, equal %v, %v", len(got), bytes.Equal(got, data), err)
		}
		st, err := fsys.Stat(ctx, "/data/a/b/blob")
		if err != nil || st.Size != 3<<20 || st.IsDir || st.Mode != 0o644 || st.ModTime.IsZero() {
			t.Errorf("Stat(blob) = %+v, %v", st, err)
		}
		if st, err := fsys.Stat(ctx, "/data/a"); err != nil || !st.IsDir {
			t.Errorf("Stat(/data/a) = %+v, %v; want a directory", st, err)
		}
		if ents, err := fsys.List(ctx, "/data/a/b"); err != nil || len(ents) != 1 || ents[0].Path != "/data/a/b/blob" || ents[0].Kind != microsandbox.FsEntryKindFile {
			t.Errorf("List = %+v, %v", ents, err)
		}
		if err := fsys.Copy(ctx, "/data/a/b/blob", "/data/copy"); err != nil {
			t.Errorf("Copy: %v", err)
		}
		if err := fsys.Rename(ctx, "/data/copy", "/data/moved"); err != nil {
			t.Errorf("Rename: %v", err)
		}
		if ok, err := fsys.Exists(ctx, "/data/moved"); !ok || err != nil {
			t.Errorf("Exists(moved) = %v, %v", ok, err)
		}
		if ok, err := fsys.Exists(ctx, "/data/copy"); ok || err != nil {
			t.Errorf("Exists(copy) after Rename = %v, %v", ok, err)
		}
		_, err = fsys.Read(ctx, "/data/missing")
		if !microsandbox.IsKind(err, microsandbox.ErrFilesystem) || !microsandbox.IsKind(err, microsandbox.ErrPathNotFound) {
			t.Errorf("Read(missing) = %v, want ErrFilesystem and ErrPathNotFound", err)
		}
		hostDir := t.TempDir()
		if err := os.WriteFile(filepath.Join(hostDir, "in"), data[:100000], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := fsys.CopyFromHost(ctx, filepath.Join(hostDir, "in"), "/data/in"); err != nil {
			t.Fatalf("CopyFromHost: %v", err)
		}
		if err := fsys.CopyToHost(ctx, "/data/in", filepath.Join(hostDir, "out")); err != nil {
			t.Fatalf("CopyToHost: %v", err)
		}
		if b, _ := os.ReadFile(filepath.Join(hostDir, "out")); !bytes.Equal(b, data[:100000]) {
			t.Errorf("host → guest → host round trip changed the bytes (%d)", len(b))
		}
		w, err := fsys.WriteStream(ctx, "/data/stream")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(w, bytes.NewReader(data))
		if err := w.Close(ctx); err != nil {
			t.Fatalf("WriteStream Close: %v", err)
		}
		r, err := fsys.ReadStream(ctx, "/data/stream")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := r.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
			t.Errorf("ReadStream: %d bytes, %v", buf.Len(), err)
		}
		r.Close()
		if err := fsys.RemoveDir(ctx, "/data"); err != nil {
			t.Errorf("RemoveDir: %v", err)
		}
		if ok, _ := fsys.Exists(ctx, "/data"); ok {
			t.Error("/data after RemoveDir")
		}
	})

	t.Run("metrics", func(t *testing.T) {
		var m *microsandbox.Metrics
		var err error
		for range 100 {
			if m, err = sb.Metrics(ctx); !microsandbox.IsKind(err, microsandbox.ErrMetricsUnavailable) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("Metrics: %v", err)
		}
		if m.MemoryLimitBytes != 256<<20 || m.VCPUTimeNs == 0 || m.DiskReadBytes == 0 ||
			m.MemoryAvailableBytes == nil || *m.MemoryAvailableBytes == 0 || m.MemoryBytes == 0 ||
			m.MemoryHostResidentBytes == nil || *m.MemoryHostResidentBytes == 0 || m.NetRxBytes == 0 && m.NetTxBytes == 0 {
			t.Errorf("Metrics = %+v", m)
		}
		all, err := microsandbox.AllSandboxMetrics(ctx)
		if err != nil || all["ops"] == nil {
			t.Errorf("AllSandboxMetrics = %v, %v; want ops", all, err)
		}
		ms, err := sb.MetricsStream(ctx, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		a, err1 := ms.Recv(ctx)
		b, err2 := ms.Recv(ctx)
		if a == nil || b == nil || err1 != nil || err2 != nil || !b.Timestamp.After(a.Timestamp) {
			t.Errorf("MetricsStream: %+v %v, %+v %v", a, err1, b, err2)
		}
		ms.Close()
		if p, err := sb.Ping(ctx); err != nil || p.Name != "ops" || p.Latency <= 0 {
			t.Errorf("Ping = %+v, %v", p, err)
		}
	})
}

// serveHTTP serves body on a new listener of network at addr and returns
// the server and its port.
func serveHTTP(t *testing.T, network, addr, body string) (*http.Server, int) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(l)
	return srv, l.Addr().(*net.TCPAddr).Port
}

// openPTY opens a pseudo-terminal pair of rows×cols, mounting devpts first
// where the harness's L1 has none.
func openPTY(t *testing.T, rows, cols uint16) (master, slave *os.File) {
	t.Helper()
	if _, err := os.Stat("/dev/pts/ptmx"); err != nil {
		os.MkdirAll("/dev/pts", 0o755)
		if err := unix.Mount("devpts", "/dev/pts", "devpts", 0, "ptmxmode=0666"); err != nil {
			t.Skipf("no devpts: %v", err)
		}
	}
	m, err := os.OpenFile("/dev/pts/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// TestSDKNetwork checks the network options end to end: the default
// network gives the guest eth0 and publishes a port; NetworkPolicy.None
// leaves only loopback.
func TestSDKNetwork(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	sb := createSandbox(ctx, t, "net", image, microsandbox.WithPorts(map[uint16]uint16{hostPort: 8080}))
	if got := mustExec(ctx, t, sb, "cat", "/sys/class/net/eth0/operstate"); strings.TrimSpace(got) != "up" {
		t.Errorf("eth0 operstate = %q", got)
	}
	if got := mustExec(ctx, t, sb, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(got, "100.96.0.2") {
		t.Errorf("eth0 addresses: %q", got)
	}
	h, err := sb.ShellStream(ctx, "echo published through the SDK | nc -l -p 8080")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill(context.Background())
	var got []byte
	addr := fmt.Sprintf("127.0.0.1:%d", hostPort)
	deadline := time.Now().Add(vmtest.Scale(10 * time.Second))
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.SetDeadline(time.Now().Add(vmtest.Scale(5 * time.Second)))
			got, _ = io.ReadAll(conn)
			conn.Close()
			if len(got) > 0 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond) // nc may not listen yet
	}
	if string(got) != "published through the SDK\n" {
		t.Errorf("read from %s = %q, want the guest's line", addr, got)
	}

	// IPv4 and IPv6 to the host through the gateway alias: only AllowAll
	// reaches the host's loopback services.
	srv4, port4 := serveHTTP(t, "tcp4", "127.0.0.1:0", "hello over ipv4")
	srv6, port6 := serveHTTP(t, "tcp6", "[::1]:0", "hello over ipv6")
	defer srv4.Close()
	defer srv6.Close()
	if got := mustExec(ctx, t, sb, "ip", "-6", "addr", "show", "eth0"); !strings.Contains(got, "fd42:6d73:62::2") {
		t.Errorf("eth0 IPv6 addresses: %q", got)
	}
	// ICMP echo: the gateway answers; a private address is refused.
	if out, err := sb.Exec(ctx, "ping", []string{"-c", "1", "-W", "5", "100.96.0.1"}); err != nil || !out.Success() {
		t.Errorf("ping the gateway: %v %+v", err, out)
	}
	if out, err := sb.Exec(ctx, "ping", []string{"-c", "1", "-W", "2", "10.0.0.1"}); err != nil || out.Success() {
		t.Errorf("ping a private address under the public profile: %v %+v, want no reply", err, out)
	}
	if out, _ := sb.Exec(ctx, "wget", []string{"-q", "-O", "-", fmt.Sprintf("http://100.96.0.1:%d/", port4)}); out == nil || out.Success() {
		t.Errorf("the public profile reached the host over IPv4: %+v", out)
	}
	all := createSandbox(ctx, t, "allnet", image, microsandbox.WithMemory(128), microsandbox.WithNetwork(microsandbox.NetworkPolicy.AllowAll()))
	for _, u := range []string{fmt.Sprintf("http://100.96.0.1:%d/", port4), fmt.Sprintf("http://[fd42:6d73:62::1]:%d/", port6)} {
		out, err := all.Exec(ctx, "wget", []string{"-q", "-O", "-", u})
		if err != nil || !out.Success() || !strings.HasPrefix(out.Stdout(), "hello over ipv") {
			t.Errorf("AllowAll: wget %s = %v %+v (stderr %q)", u, err, out, out.Stderr())
		}
	}
	all.Stop(ctx)

	none := createSandbox(ctx, t, "nonet", image, microsandbox.WithMemory(128),
		microsandbox.WithNetwork(microsandbox.NetworkPolicy.None()),
		microsandbox.WithRootDisk(microsandbox.RootDisk.Tmpfs(microsandbox.RootDiskTmpfsOptions{SizeMiB: 32})))
	if got := mustExec(ctx, t, none, "df", "-m", "/"); !strings.Contains(got, "32") {
		t.Errorf("df / with a 32 MiB tmpfs root disk: %q", got)
	}
	if got := mustExec(ctx, t, none, "ls", "/sys/class/net"); strings.Contains(got, "eth") || !strings.Contains(got, "lo") {
		t.Errorf("interfaces under NetworkPolicy.None = %q, want lo and no eth0", got)
	}
}
