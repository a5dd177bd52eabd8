// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
)

// busyboxOCIFile is the busybox test image as an OCI layout in one tar
// (tests/mkoci, built by make on the host, where apt is).
const busyboxOCIFile = "busybox-oci.tar"

// sandboxBootTimeout bounds each CreateSandbox's wait for the agent, and
// sandboxTestTimeout each test (not scaled by the harness factor: the
// nested boot takes about 5 s).
const (
	sandboxBootTimeout = 2 * time.Minute
	sandboxTestTimeout = 4 * time.Minute
)

// untarLayout unpacks the layout tar into a temporary directory and returns
// the directory.
func untarLayout(t *testing.T, tarPath string) string {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("layout tar: entry %q escapes", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var out *os.File
			if out, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
				_, err = io.Copy(out, tr)
				err = errors.Join(err, out.Close())
			}
		default:
			t.Fatalf("layout tar: unexpected entry %q type %c", hdr.Name, hdr.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// setupRuntime points the SDK at the run directory's kernel, agent and msb
// binary and at a fresh MSB_HOME, and returns the busybox image reference.
func setupRuntime(t *testing.T) string {
	t.Helper()
	t.Setenv("MSB_HOME", t.TempDir())
	t.Setenv("MSB_KERNEL", requireFile(t, kernelFile))
	t.Setenv("MSB_AGENT", requireFile(t, agentFile))
	t.Setenv("MSB_BIN", requireFile(t, "msb"))
	// A boot takes seconds even nested; a bounded wait turns a guest that
	// hangs in boot into a failure with the console tail, not a long hang.
	t.Setenv("MSB_BOOT_TIMEOUT", sandboxBootTimeout.String())
	return "oci:" + untarLayout(t, requireFile(t, busyboxOCIFile)) + ":busybox"
}

// TestSandbox is the first vertical slice through the public API:
// CreateSandbox on the busybox image, Exec, Stop, and the persisted record.
func TestSandbox(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()

	start := time.Now()
	sb, err := microsandbox.CreateSandbox(ctx, "e2e-sandbox",
		microsandbox.WithImage(image),
		microsandbox.WithMemory(256),
		microsandbox.WithCPUs(1),
		microsandbox.WithEnv(map[string]string{"GREETING": "hi"}),
		microsandbox.WithWorkdir("/app"))
	if err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	t.Logf("create took %v (slowdown factor %d)", time.Since(start).Round(time.Millisecond), vmtest.Slowdown())
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			sb.Stop(context.Background())
		}
	})
	if sb.Name() != "e2e-sandbox" {
		t.Errorf("Name() = %q", sb.Name())
	}

	out, err := sb.Exec(ctx, "echo", []string{"hello"})
	if err != nil {
		t.Fatalf("Exec(echo hello): %v", err)
	}
	if out.Stdout() != "hello\n" || out.ExitCode() != 0 || !out.Success() {
		t.Fatalf("Exec(echo hello) = %q (stderr %q), exit %d; want \"hello\\n\", 0", out.Stdout(), out.Stderr(), out.ExitCode())
	}

	t.Run("exit code is data", func(t *testing.T) {
		out, err := sb.Exec(ctx, "sh", []string{"-c", "echo err >&2; exit 3"})
		if err != nil {
			t.Fatalf("Exec(exit 3): %v", err)
		}
		if out.ExitCode() != 3 || out.Stderr() != "err\n" {
			t.Errorf("Exec(exit 3) = exit %d, stderr %q; want exit 3, stderr \"err\\n\"", out.ExitCode(), out.Stderr())
		}
	})
	t.Run("raw bytes", func(t *testing.T) {
		// ash's builtin printf: busybox-static here has no printf applet.
		out, err := sb.Shell(ctx, `printf 'A\000B\377'`)
		if err != nil {
			t.Fatalf("Shell(printf): %v", err)
		}
		if string(out.StdoutBytes()) != "A\x00B\xff" || out.Stdout() != "A\x00B\xff" {
			t.Errorf("Shell(printf) = %q, want \"A\\x00B\\xff\"", out.StdoutBytes())
		}
	})
	t.Run("env and workdir", func(t *testing.T) {
		out, err := sb.Shell(ctx, "echo $GREETING; pwd; hostname")
		if err != nil {
			t.Fatalf("Shell: %v", err)
		}
		if out.Stdout() != "hi\n/app\ne2e-sandbox\n" {
			t.Errorf("Shell = %q (stderr %q); want \"hi\\n/app\\ne2e-sandbox\\n\"", out.Stdout(), out.Stderr())
		}
	})
	t.Run("spawn failure", func(t *testing.T) {
		_, err := sb.Exec(ctx, "/no/such/program", nil)
		if !microsandbox.IsKind(err, microsandbox.ErrExecFailed) {
			t.Errorf("Exec(missing program) = %v, want ErrExecFailed", err)
		}
	})
	t.Run("duplicate name", func(t *testing.T) {
		_, err := microsandbox.CreateSandbox(ctx, "e2e-sandbox", microsandbox.WithImage(image))
		if !errors.Is(err, microsandbox.ErrSandboxAlreadyExists) {
			t.Errorf("CreateSandbox(same name) = %v, want ErrSandboxAlreadyExists", err)
		}
	})

	h, err := microsandbox.GetSandbox(ctx, "e2e-sandbox")
	if err != nil || h.Status() != microsandbox.SandboxStatusRunning {
		t.Fatalf("GetSandbox before Stop = %v, %v; want running", h, err)
	}
	pid := sandboxPID(t, "e2e-sandbox")

	start = time.Now()
	if err := sb.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped = true
	t.Logf("stop took %v", time.Since(start).Round(time.Millisecond))
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("sandbox process %d after Stop: kill(0) = %v, want ESRCH", pid, err)
	}
	h, err = microsandbox.GetSandbox(ctx, "e2e-sandbox")
	if err != nil || h.Status() != microsandbox.SandboxStatusStopped {
		t.Fatalf("GetSandbox after Stop = %+v, %v; want stopped", h, err)
	}
	if st := sandboxState(t, "e2e-sandbox"); !strings.Contains(st.Exit, "power-off") {
		t.Errorf("state exit = %q, want a guest power-off", st.Exit)
	}
	if _, err := sb.Exec(ctx, "true", nil); !microsandbox.IsKind(err, microsandbox.ErrSandboxNotRunning) {
		t.Errorf("Exec after Stop = %v, want ErrSandboxNotRunning", err)
	}
	if err := microsandbox.RemoveSandbox(ctx, "e2e-sandbox"); err != nil {
		t.Fatalf("RemoveSandbox: %v", err)
	}
	if _, err := microsandbox.GetSandbox(ctx, "e2e-sandbox"); !errors.Is(err, microsandbox.ErrSandboxNotFound) {
		t.Errorf("GetSandbox after Remove = %v, want ErrSandboxNotFound", err)
	}
}

type sandboxRecord struct {
	PID    int    `json:"pid"`
	Status string `json:"status"`
	Exit   string `json:"exit"`
}

// sandboxState reads the sandbox's state.json (MSB_HOME layout).
func sandboxState(t *testing.T, name string) sandboxRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(os.Getenv("MSB_HOME"), "sandboxes", name, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r sandboxRecord
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func sandboxPID(t *testing.T, name string) int {
	t.Helper()
	r := sandboxState(t, name)
	if r.PID <= 0 {
		t.Fatalf("state.json of %s has no pid: %+v", name, r)
	}
	return r.PID
}

// TestSandboxCrash kills the sandbox process: the sandbox must be seen as
// crashed and calls on it must fail at once, not hang.
func TestSandboxCrash(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()
	sb, err := microsandbox.CreateSandbox(ctx, "crash", microsandbox.WithImage(image), microsandbox.WithMemory(128))
	if err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	t.Log("created")
	pid := sandboxPID(t, "crash")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = sb.Exec(ctx, "true", nil)
	if !microsandbox.IsKind(err, microsandbox.ErrSandboxNotRunning) {
		t.Errorf("Exec after kill -9 = %v, want ErrSandboxNotRunning", err)
	}
	h, err := microsandbox.GetSandbox(ctx, "crash")
	if err != nil || h.Status() != microsandbox.SandboxStatusCrashed {
		t.Errorf("GetSandbox after kill -9 = %+v, %v; want crashed", h, err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("Stop after kill -9: %v", err)
	}
	if d := time.Since(start); d > vmtest.Scale(10*time.Second) {
		t.Errorf("Exec, Get and Stop of a crashed sandbox took %v", d)
	}
	if h, _ := microsandbox.GetSandbox(ctx, "crash"); h == nil || h.Status() != microsandbox.SandboxStatusCrashed {
		t.Errorf("status after Stop of a crashed sandbox = %v, want crashed", h)
	}
}

// TestMsbRun drives "msb run" as a user would.
func TestMsbRun(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireFile(t, "msb"), "run", "-memory", "128", image, "--", "sh", "-c", "echo from-guest; exit 7")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("msb run: %v, want exit status 7; stderr:\n%s", err, stderr.String())
	}
	if stdout.String() != "from-guest\n" {
		t.Errorf("msb run stdout = %q, want \"from-guest\\n\"", stdout.String())
	}
	// msb run removes its sandbox.
	entries, _ := os.ReadDir(filepath.Join(os.Getenv("MSB_HOME"), "sandboxes"))
	if len(entries) != 0 {
		t.Errorf("msb run left %d sandboxes behind", len(entries))
	}

	// The other everyday commands, as a user types them.
	msb := func(want int, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, requireFile(t, "msb"), args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("msb %v: %v", args, err)
		}
		if code != want {
			t.Errorf("msb %v: exit %d, want %d; stdout %q stderr %q", args, code, want, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	msb(0, "create", "-name", "cli", "-memory", "128", image)
	var rows []struct{ Name, Status string }
	if err := json.Unmarshal([]byte(msb(0, "ls", "--json")), &rows); err != nil || len(rows) != 1 || rows[0].Name != "cli" || rows[0].Status != "running" {
		t.Errorf("msb ls --json = %+v, %v", rows, err)
	}
	if got := msb(5, "exec", "cli", "--", "sh", "-c", "echo in-cli; exit 5"); got != "in-cli\n" {
		t.Errorf("msb exec stdout = %q", got)
	}
	hostFile := filepath.Join(t.TempDir(), "f")
	os.WriteFile(hostFile, []byte("copied"), 0o644)
	msb(0, "cp", hostFile, "cli:/root/f")
	msb(0, "cp", "cli:/root/f", hostFile+".back")
	if b, _ := os.ReadFile(hostFile + ".back"); string(b) != "copied" {
		t.Errorf("msb cp round trip = %q", b)
	}
	msb(0, "stop", "cli")
	if got := msb(0, "ps"); strings.Contains(got, "cli") {
		t.Errorf("msb ps after stop lists cli: %q", got)
	}
	// exec on a stopped sandbox starts it for the command, then stops it;
	// the root disk kept the copied file.
	if got := msb(0, "exec", "cli", "--", "cat", "/root/f"); got != "copied" {
		t.Errorf("msb exec on a stopped sandbox = %q", got)
	}
	if got := msb(0, "ls"); !strings.Contains(got, "stopped") {
		t.Errorf("msb ls after exec on a stopped sandbox: %q", got)
	}
	msb(0, "rm", "cli")
	if got := msb(0, "ls", "--json"); strings.TrimSpace(got) != "[]" {
		t.Errorf("msb ls after rm = %q", got)
	}
}

// TestSandboxDiesWithCreator kills the creating process (msb run) with
// SIGKILL: the attached sandbox must stop on its own and record it.
func TestSandboxDiesWithCreator(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireFile(t, "msb"), "run", "-name", "attached", "-memory", "128", image, "--", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	statePath := filepath.Join(os.Getenv("MSB_HOME"), "sandboxes", "attached", "state.json")
	var pid int
	for pid == 0 {
		if b, err := os.ReadFile(statePath); err == nil {
			var r sandboxRecord
			if json.Unmarshal(b, &r) == nil && r.Status == "running" {
				pid = r.PID
			}
		}
		if pid == 0 {
			select {
			case <-ctx.Done():
				t.Fatalf("sandbox never running: %v", ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	// The sandbox process is now an orphan; it is gone once it is no
	// longer listed or only a zombie awaiting its new parent.
	for processRunning(pid) {
		select {
		case <-ctx.Done():
			t.Fatalf("sandbox process %d still running after its creator died", pid)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if r := sandboxState(t, "attached"); r.Status != "stopped" {
		t.Errorf("state after the creator died = %+v, want stopped", r)
	}
}

// processRunning reports whether pid exists and is not a zombie.
func processRunning(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// Field 3, after the parenthesized command name, is the state.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
