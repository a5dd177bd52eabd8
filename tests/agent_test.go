// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/cpio"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/rng"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
)

// Files the harness places in the run directory (see the Makefile's e2e):
// the agent and the busybox root image (tests/testroot.sh).
const (
	agentFile     = "msb-agent"
	testRootFile  = "test-root.erofs"
	testUpperFile = "test-upper.ext4" // empty ext4, 16 MiB
)

// agentVM is a machine booted with msb-agent as /init, the test root image
// as /dev/vda (read-only), vsock and rng.
type agentVM struct {
	t       *testing.T
	console *consoleLog
	vsock   *vsock.Device
	start   time.Time
	done    chan struct{} // closed when Run returned
	exit    vmm.Exit
	runErr  error
}

// agentInitramfs writes an initramfs with the agent as /init and, at
// bootcfg.Path, cfg (through bootcfg.WriteInitramfs) or raw bytes when cfg
// is nil.
func agentInitramfs(t *testing.T, cfg *bootcfg.Config, raw []byte) string {
	t.Helper()
	agent, err := os.Open(requireFile(t, agentFile))
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	fi, err := agent.Stat()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if cfg != nil {
		if err := bootcfg.WriteInitramfs(f, agent, fi.Size(), cfg); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := cpio.NewWriter(f)
	for _, step := range []error{
		a.Dir("dev", 0o755),
		a.CharDevice("dev/console", 0o600, 5, 1),
		a.Dir("msb", 0o700),
		a.File(strings.TrimPrefix(bootcfg.Path, "/"), 0o600, raw),
		a.FileFrom("init", 0o755, fi.Size(), agent),
		a.Close(),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return p
}

// startAgentVM boots the machine in the background; Close (registered with
// t.Cleanup) stops it if the test did not end it.
func startAgentVM(t *testing.T, cfg *bootcfg.Config, raw []byte, disks ...virtio.Device) *agentVM {
	t.Helper()
	return startAgentVMOn(t, testRootFile, cfg, raw, disks...)
}

// startAgentVMOn is startAgentVM with the root image rootFile from the run
// directory.
func startAgentVMOn(t *testing.T, rootFile string, cfg *bootcfg.Config, raw []byte, disks ...virtio.Device) *agentVM {
	t.Helper()
	root, err := blk.New(blk.Config{Path: requireFile(t, rootFile), ReadOnly: true, ID: "root"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	vs, err := vsock.New(vsock.Config{GuestCID: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vs.Close() })
	v := &agentVM{t: t, console: &consoleLog{t: t}, vsock: vs, done: make(chan struct{})}
	m, err := vmm.New(vmm.Config{
		Kernel:    requireFile(t, kernelFile),
		Initrd:    agentInitramfs(t, cfg, raw),
		Console:   v.console,
		MemoryMiB: 256,
		VCPUs:     2,
		Devices:   append([]virtio.Device{root, vs, rng.New()}, disks...),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(90*time.Second))
	v.start = time.Now()
	go func() {
		defer close(v.done)
		defer cancel()
		v.exit, v.runErr = m.Run(ctx)
	}()
	t.Cleanup(func() {
		m.Stop()
		<-v.done
	})
	return v
}

// wait returns how the machine ended, failing the test if it does not end
// within d.
func (v *agentVM) wait(d time.Duration) vmm.Exit {
	v.t.Helper()
	select {
	case <-v.done:
	case <-time.After(d):
		v.t.Fatalf("the machine did not end within %v; console:\n%s", d, v.console.String())
	}
	v.t.Logf("machine ended after %v: %v", time.Since(v.start).Round(time.Millisecond), v.exit)
	if v.runErr != nil {
		v.t.Fatalf("Run: %v\nconsole:\n%s", v.runErr, v.console.String())
	}
	return v.exit
}

// dial connects to the agent, retrying while it is not listening yet.
func (v *agentVM) dial(ctx context.Context) *host.Client {
	v.t.Helper()
	for {
		conn, err := v.vsock.Dial(ctx, bootcfg.AgentPort)
		if err == nil {
			var c *host.Client
			// A connection can reach a listener that is going away (a
			// server being restarted): it then ends in the handshake.
			if c, err = host.Dial(ctx, conn, host.Config{Agent: "e2e"}); err == nil {
				v.t.Cleanup(func() { c.Close() })
				return c
			}
		}
		select {
		case <-v.done:
			v.t.Fatalf("the machine ended before the agent answered: %v; console:\n%s", v.exit, v.console.String())
		case <-ctx.Done():
			v.t.Fatalf("dial agent: %v (last: %v); console:\n%s", ctx.Err(), err, v.console.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// run runs argv with cfg's other fields and returns its output, failing the
// test on a transport error.
func run(ctx context.Context, t *testing.T, c *host.Client, cfg host.ExecConfig) *host.Output {
	t.Helper()
	out, err := c.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run(%q): %v", cfg.Argv, err)
	}
	return out
}

// TestAgent boots msb-agent on the busybox image and drives it over vsock:
// exec output, exit codes, environment, user, working directory, stdin,
// a terminal, the overlay root, concurrent execs, orphan reaping, then a
// shutdown through the agent that must end in a clean power-off.
func TestAgent(t *testing.T) {
	vmtest.RequireKVM(t)
	rootImage := requireFile(t, testRootFile)
	before := fileSum(t, rootImage)
	cfg := &bootcfg.Config{
		Hostname: "agent-e2e",
		Env:      []string{"BOOT_ENV=from-boot", "PATH=/bin"},
		Workdir:  "/work",
		Hosts:    []bootcfg.Host{{IP: "10.0.0.9", Names: []string{"db.internal"}}},
		TmpSize:  "32m",
		Root:     bootcfg.Root{Upper: bootcfg.Upper{Size: "64m"}},
		// Short, so that the SIGKILL escalation is quick to see.
		StopGraceMS: 500,
	}
	v := startAgentVM(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
	defer cancel()
	c := v.dial(ctx)
	out := run(ctx, t, c, host.ExecConfig{Argv: []string{"echo", "hello", "world"}})
	firstExec := time.Since(v.start)
	if got := string(out.Stdout); got != "hello world\n" || !out.Status.Success() {
		t.Fatalf("echo hello world = %q, %+v; want \"hello world\\n\", 0", got, out.Status)
	}
	t.Logf("boot to first exec: %v (Run start to echo's output, nested harness: slowdown factor %d)", firstExec.Round(time.Millisecond), vmtest.Slowdown())
	if l := consoleLine(v.console, "msb-agent: listening"); l != "" {
		t.Logf("guest: %s", l)
	}

	t.Run("exit codes", func(t *testing.T) {
		for _, code := range []int{0, 1, 7, 255} {
			out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", fmt.Sprintf("exit %d", code)}})
			if out.Status.Code != code {
				t.Errorf("sh -c 'exit %d': code %d", code, out.Status.Code)
			}
		}
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "kill -9 $$"}})
		if out.Status.Code != -1 || out.Status.Signal != 9 {
			t.Errorf("sh killing itself: %+v, want code -1 signal 9", out.Status)
		}
	})
	t.Run("env", func(t *testing.T) {
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"env"}, Env: []string{"EXEC_ENV=from-exec", "BOOT_ENV=overridden"}})
		env := string(out.Stdout)
		for _, want := range []string{"EXEC_ENV=from-exec\n", "BOOT_ENV=overridden\n", "PATH=/bin\n"} {
			if !strings.Contains(env, want) {
				t.Errorf("env output lacks %q:\n%s", want, env)
			}
		}
		out = run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "echo $BOOT_ENV"}})
		if got := string(out.Stdout); got != "from-boot\n" {
			t.Errorf("boot env BOOT_ENV = %q, want from-boot", got)
		}
	})
	t.Run("user", func(t *testing.T) {
		for user, want := range map[string]string{"nobody": "65534\n", "": "0\n", "65534:65534": "65534\n"} {
			out := run(ctx, t, c, host.ExecConfig{Argv: []string{"id", "-u"}, User: user})
			if got := string(out.Stdout); got != want {
				t.Errorf("id -u as %q = %q, want %q (stderr %q)", user, got, want, out.Stderr)
			}
		}
	})
	t.Run("cwd", func(t *testing.T) {
		for dir, want := range map[string]string{"/tmp": "/tmp\n", "/work": "/work\n", "": "/\n"} {
			out := run(ctx, t, c, host.ExecConfig{Argv: []string{"pwd"}, Dir: dir})
			if got := string(out.Stdout); got != want {
				t.Errorf("pwd in %q = %q, want %q", dir, got, want)
			}
		}
	})
	t.Run("stdin", func(t *testing.T) {
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"cat"}, Stdin: host.StdinBytes, StdinData: []byte("bytes in\n")})
		if got := string(out.Stdout); got != "bytes in\n" {
			t.Errorf("cat of StdinBytes = %q", got)
		}
		p, err := c.Exec(ctx, host.ExecConfig{Argv: []string{"wc", "-c"}, Stdin: host.StdinPipe})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
		if _, err := p.WriteStdin(ctx, data); err != nil {
			t.Fatal(err)
		}
		if err := p.CloseStdin(ctx); err != nil {
			t.Fatal(err)
		}
		o, err := p.Output(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(o.Stdout)); got != fmt.Sprint(len(data)) {
			t.Errorf("wc -c of 1 MiB piped = %q, want %d", got, len(data))
		}
	})
	t.Run("tty", func(t *testing.T) {
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"stty", "size"}, TTY: true, Rows: 33, Cols: 101})
		if got := strings.TrimSpace(string(out.Stdout)); got != "33 101" {
			t.Errorf("stty size on a 33x101 tty = %q", got)
		}
		out = run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "test -t 0 && test -t 1 && tty"}, TTY: true})
		if got := string(out.Stdout); !strings.HasPrefix(got, "/dev/pts/") {
			t.Errorf("tty on a tty = %q (code %d), want /dev/pts/N", got, out.Status.Code)
		}
	})
	t.Run("system", func(t *testing.T) {
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"cat", "/proc/sys/kernel/hostname", "/etc/hostname", "/etc/hosts", "/proc/mounts"}})
		got := string(out.Stdout)
		for _, want := range []string{
			"agent-e2e\nagent-e2e\n", "127.0.1.1\tagent-e2e\n", "10.0.0.9\tdb.internal\n",
			"overlay / overlay ", "proc /proc proc ", "devpts /dev/pts devpts ", "shm /dev/shm tmpfs ",
			"tmpfs /run tmpfs ", "tmpfs /tmp tmpfs ", "size=32768k",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("guest files lack %q:\n%s", want, got)
			}
		}
		if fi, err := c.Stat(ctx, "/work"); err != nil || fi.Kind != host.KindDirectory {
			t.Errorf("Stat(/work) = %+v, %v; want the configured workdir", fi, err)
		}
	})
	t.Run("overlay", func(t *testing.T) {
		if err := c.WriteFile(ctx, "/written.txt", []byte("upper\n"), host.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, err := c.ReadFile(ctx, "/written.txt"); err != nil || string(got) != "upper\n" {
			t.Errorf("ReadFile(/written.txt) = %q, %v", got, err)
		}
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "echo changed > /etc/marker && cat /etc/marker && echo new > /bin/new && cat /bin/new"}})
		if got := string(out.Stdout); got != "changed\nnew\n" {
			t.Errorf("writing /etc and /bin over the image: %q, %q", got, out.Stderr)
		}
		// The lower itself is read-only.
		out = run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "echo x > /dev/vda"}})
		if out.Status.Success() {
			t.Error("writing /dev/vda succeeded; the root image must be read-only")
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		const n = 32
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				out, err := c.Run(ctx, host.ExecConfig{Argv: []string{"sh", "-c", fmt.Sprintf("sleep 0.2; echo %d", i)}})
				if err != nil {
					errs <- err
				} else if got := string(out.Stdout); got != fmt.Sprintf("%d\n", i) {
					errs <- fmt.Errorf("exec %d printed %q", i, got)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("orphans reaped", func(t *testing.T) {
		// Each subshell exits at once; its sleep is re-parented to init,
		// which must reap it when it ends.
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "for i in 1 2 3 4 5 6 7 8; do (sleep 3 </dev/null >/dev/null 2>&1 &); done"}})
		if !out.Status.Success() {
			t.Fatalf("spawning orphans: %+v %q", out.Status, out.Stderr)
		}
		deadline := time.Now().Add(vmtest.Scale(5 * time.Second))
		initsOrphans := 0
		for {
			out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null"}})
			zombies, sleeps := 0, 0
			for _, line := range strings.Split(string(out.Stdout), "\n") {
				// pid (comm) state ppid ...
				_, rest, ok := strings.Cut(line, ") ")
				if ok && strings.HasPrefix(rest, "Z") {
					zombies++
				}
				if strings.Contains(line, "(sleep)") {
					sleeps++
					if f := strings.Fields(rest); len(f) > 1 && f[1] == "1" {
						initsOrphans++
					}
				}
			}
			if zombies == 0 && sleeps == 0 {
				if initsOrphans == 0 {
					t.Error("no orphaned sleep was seen as init's child")
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d zombies and %d sleeps left after %v:\n%s", zombies, sleeps, vmtest.Scale(5*time.Second), out.Stdout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("server restart", func(t *testing.T) {
		// The shell's parent is the protocol server: init restarts it
		// and the host dials again.
		c.Run(ctx, host.ExecConfig{Argv: []string{"sh", "-c", "kill -9 $PPID; sleep 5"}})
		select {
		case <-c.Done():
		case <-ctx.Done():
			t.Fatal("the connection survived the server's death")
		}
		c = v.dial(ctx)
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"echo", "again"}})
		if got := string(out.Stdout); got != "again\n" {
			t.Errorf("echo after the restart = %q", got)
		}
		if !strings.Contains(v.console.String(), "msb-agent: error: server (pid ") {
			t.Error("console lacks the server's end")
		}
	})

	// A process that ignores SIGTERM, outside the server's process
	// groups: shutdown must escalate to SIGKILL after the stop grace.
	out = run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", `setsid sh -c 'trap "" TERM; touch /run/ready; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &
		while [ ! -e /run/ready ]; do sleep 0.05; done`}})
	if !out.Status.Success() {
		t.Fatalf("starting a TERM-proof process: %+v %q", out.Status, out.Stderr)
	}

	// Shutdown through the agent: signal init as busybox's poweroff
	// would, from an exec.
	if _, err := c.Run(ctx, host.ExecConfig{Argv: []string{"kill", "-TERM", "1"}}); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("kill -TERM 1: %v (the connection may end first)", err)
	}
	exit := v.wait(vmtest.Scale(20 * time.Second))
	if exit.Reason != vmm.ExitPowerOff || exit.Status != 0 {
		t.Errorf("exit = %v, want power-off with status 0; console:\n%s", exit, v.console.String())
	}
	for _, want := range []string{"msb-agent: processes left after 500ms: SIGKILL", "msb-agent: power off (status 0)"} {
		if !strings.Contains(v.console.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, v.console.String())
		}
	}
	for _, l := range strings.Split(v.console.String(), "\n") {
		if strings.HasPrefix(l, "msb-agent:") {
			t.Logf("console: %s", l)
		}
	}
	if fileSum(t, rootImage) != before {
		t.Error("the root image on the host changed")
	}
}

// TestAgentReboot asks init for a reboot (SIGINT, as ctrl-alt-del does),
// which ends a microVM as an i8042 reset.
func TestAgentReboot(t *testing.T) {
	vmtest.RequireKVM(t)
	v := startAgentVM(t, &bootcfg.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
	defer cancel()
	c := v.dial(ctx)
	c.Run(ctx, host.ExecConfig{Argv: []string{"kill", "-INT", "1"}})
	if exit := v.wait(vmtest.Scale(20 * time.Second)); exit.Reason != vmm.ExitReset {
		t.Errorf("exit = %v, want reset; console:\n%s", exit, v.console.String())
	}
	if !strings.Contains(v.console.String(), "msb-agent: rebooting") {
		t.Errorf("console lacks the reboot line:\n%s", v.console.String())
	}
}

// TestAgentDiskUpper boots twice with an ext4 disk as the root's upper: a
// file written in the first boot is there in the second, after a clean
// power-off.
func TestAgentDiskUpper(t *testing.T) {
	vmtest.RequireKVM(t)
	src, err := os.ReadFile(requireFile(t, testUpperFile))
	if err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(t.TempDir(), "upper.ext4")
	if err := os.WriteFile(upper, src, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &bootcfg.Config{Root: bootcfg.Root{Upper: bootcfg.Upper{Device: "/dev/vdb"}}}
	for i, script := range []string{
		"echo persisted > /etc/persist",
		"cat /etc/persist /etc/marker",
	} {
		disk, err := blk.New(blk.Config{Path: upper, ID: "upper"})
		if err != nil {
			t.Fatal(err)
		}
		v := startAgentVM(t, cfg, nil, disk)
		ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
		c := v.dial(ctx)
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", script}})
		if i == 1 {
			if got := string(out.Stdout); got != "persisted\nfrom the image\n" {
				t.Errorf("second boot: %q, %q; want the file from the first boot", got, out.Stderr)
			}
		} else if !out.Status.Success() {
			t.Errorf("first boot: %+v %q", out.Status, out.Stderr)
		}
		c.Run(ctx, host.ExecConfig{Argv: []string{"kill", "-TERM", "1"}})
		if exit := v.wait(vmtest.Scale(20 * time.Second)); exit.Reason != vmm.ExitPowerOff || exit.Status != 0 {
			t.Errorf("boot %d: exit = %v, want power-off 0; console:\n%s", i, exit, v.console.String())
		}
		cancel()
		disk.Close()
	}
}

// TestAgentBootFailure checks that a guest that cannot boot powers off with
// the status that says why and a console message, instead of hanging.
func TestAgentBootFailure(t *testing.T) {
	vmtest.RequireKVM(t)
	for _, c := range []struct {
		name    string
		cfg     *bootcfg.Config
		raw     string
		status  bootcfg.Status
		message string
	}{
		{
			name:    "wrong fstype",
			cfg:     &bootcfg.Config{Root: bootcfg.Root{FSType: "ext4"}},
			status:  bootcfg.StatusRootFailed,
			message: "msb-agent: error: root: mount ext4 /dev/vda on /msb/lower (ro): invalid argument",
		},
		{
			name:    "bad config",
			raw:     `{"root": {"fstype": "xfs"}}`,
			status:  bootcfg.StatusBadConfig,
			message: `root.fstype "xfs", want erofs or ext4`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := startAgentVM(t, c.cfg, []byte(c.raw))
			exit := v.wait(vmtest.Scale(30 * time.Second))
			if exit.Reason != vmm.ExitPowerOff || exit.Status != uint8(c.status) {
				t.Errorf("exit = %v, want power-off with status %d (%v)", exit, c.status, c.status)
			}
			if !strings.Contains(v.console.String(), c.message) {
				t.Errorf("console lacks %q:\n%s", c.message, v.console.String())
			}
		})
	}
}

// consoleLine returns the first console line that starts with prefix.
func consoleLine(c *consoleLog, prefix string) string {
	for _, l := range strings.Split(c.String(), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
