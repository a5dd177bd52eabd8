// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
	"github.com/microsandbox-go/microsandbox/pkg/oci"
)

// Timing of Create and Stop.
const (
	// DefaultBootTimeout bounds the wait for the agent to answer after the
	// sandbox process started.
	DefaultBootTimeout = 2 * time.Minute
	// DefaultStopTimeout is the grace period between the shutdown request
	// and killing the sandbox process (upstream's defaultStopTimeout).
	DefaultStopTimeout = 10 * time.Second
	pollInterval       = 20 * time.Millisecond
	// deathWait is how long Exec waits, after losing the agent, to see
	// whether the sandbox process ended.
	deathWait        = time.Second
	consoleTailBytes = 4096
)

// Create creates and boots the sandbox cfg describes and returns once its
// agent answered. ctx bounds the creation only, not the sandbox's life. On
// failure nothing of the sandbox is left behind; a boot failure's error
// carries the tail of the guest console.
func Create(ctx context.Context, rt Runtime, cfg Config) (*Sandbox, error) {
	rt.abs()
	if err := errors.Join(cfg.Validate(), rt.Check()); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(rt.sandboxesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: create: %w", err)
	}
	dir := rt.sandboxDir(cfg.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: sandbox already exists: %s (remove it first)", ErrAlreadyExists, cfg.Name)
		}
		return nil, fmt.Errorf("sandbox: create: %w", err)
	}
	sb, err := create(ctx, &rt, cfg, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return sb, nil
}

func create(ctx context.Context, rt *Runtime, cfg Config, dir string) (*Sandbox, error) {
	now := time.Now().UTC()
	st := &State{Name: cfg.Name, Status: StatusStarting, Created: now, Socket: SocketPath(dir), Config: cfg}
	if err := writeState(dir, st); err != nil {
		return nil, err
	}
	im, rootPath, err := prepareImage(ctx, rt, cfg.Image)
	if err != nil {
		return nil, err
	}
	boot := bootConfig(cfg, im.Config())
	if boot.Patches, err = bootPatches(cfg.Patches, cfg.MemoryMiB); err != nil {
		return nil, err
	}
	if err := writeInitramfs(rt.Agent, filepath.Join(dir, initrdFile), boot); err != nil {
		return nil, err
	}
	spec, _ := json.Marshal(vmSpec{
		Kernel: rt.Kernel, Initrd: filepath.Join(dir, initrdFile), Rootfs: rootPath,
		MemoryMiB: int(cfg.MemoryMiB), CPUs: int(cfg.CPUs),
	})
	if err := writeFileAtomic(filepath.Join(dir, vmFile), spec); err != nil {
		return nil, err
	}
	sb := &Sandbox{rt: *rt, dir: dir, name: cfg.Name, workdir: boot.Workdir, user: boot.User, done: make(chan struct{})}
	if err := sb.spawn(cfg.Detached); err != nil {
		return nil, err
	}
	if _, err := updateState(dir, func(s *State) { s.PID = sb.cmd.Process.Pid }); err != nil {
		sb.kill()
		return nil, err
	}
	c, err := sb.waitReady(ctx)
	if err != nil {
		sb.kill()
		return nil, err
	}
	sb.client = c
	if _, err := updateState(dir, func(s *State) {
		if !s.Status.Terminal() {
			s.Status = StatusRunning
		}
	}); err != nil {
		sb.kill()
		return nil, err
	}
	return sb, nil
}

// bootConfig is the guest's boot configuration: the image's environment
// with cfg.Env merged over it, and the workdir and user of cfg or else the
// image.
func bootConfig(cfg Config, ic oci.ImageConfig) *bootcfg.Config {
	env := map[string]string{}
	var order []string
	for _, kv := range ic.Env {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	keys := make([]string, 0, len(cfg.Env))
	for k := range cfg.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = cfg.Env[k]
	}
	b := &bootcfg.Config{Hostname: cfg.Hostname, Workdir: cfg.Workdir, User: cfg.User}
	for _, k := range order {
		b.Env = append(b.Env, k+"="+env[k])
	}
	if b.Workdir == "" {
		b.Workdir = ic.WorkingDir
	}
	if b.User == "" {
		b.User = ic.User
	}
	return b
}

func writeInitramfs(agentPath, out string, c *bootcfg.Config) error {
	agent, err := os.Open(agentPath)
	if err != nil {
		return fmt.Errorf("sandbox: agent: %w", err)
	}
	defer agent.Close()
	fi, err := agent.Stat()
	if err != nil {
		return fmt.Errorf("sandbox: agent: %w", err)
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("sandbox: initramfs: %w", err)
	}
	if err := bootcfg.WriteInitramfs(f, agent, fi.Size(), c); err != nil {
		f.Close()
		if errors.Is(err, bootcfg.ErrInvalid) {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		return fmt.Errorf("sandbox: initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sandbox: initramfs: %w", err)
	}
	return nil
}

// spawn starts the sandbox process and the goroutine that waits for it.
func (sb *Sandbox) spawn(detached bool) error {
	logf, err := os.OpenFile(filepath.Join(sb.dir, runtimeLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("sandbox: runtime log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(sb.rt.Binary, HiddenCommand, sb.dir)
	cmd.Dir = sb.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		// The VM stops (SIGTERM → power off the machine, record stopped)
		// when the creating thread's process dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: start sandbox process: %w", ErrBoot, err)
	}
	sb.cmd = cmd
	go func() {
		sb.waitErr = cmd.Wait()
		close(sb.done)
	}()
	return nil
}

// waitReady dials the agent through the sandbox's socket until it answers,
// the sandbox process ends, ctx ends or DefaultBootTimeout passes.
func (sb *Sandbox) waitReady(ctx context.Context) (*host.Client, error) {
	bt := sb.rt.BootTimeout
	if bt <= 0 {
		bt = DefaultBootTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, bt)
	defer cancel()
	sock := SocketPath(sb.dir)
	var last error
	for {
		c, err := DialAgent(ctx, sock)
		if err == nil {
			return c, nil
		}
		last = err
		select {
		case <-sb.done:
			return nil, fmt.Errorf("%w: sandbox process ended (%v) before the agent answered; console:\n%s", ErrBoot, sb.waitErr, sb.consoleTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: agent did not answer within %v (last: %v); console:\n%s", ErrBoot, bt, last, sb.consoleTail())
		case <-time.After(pollInterval):
		}
	}
}

// consoleTail returns the end of the guest console log.
func (sb *Sandbox) consoleTail() string {
	b, _ := os.ReadFile(filepath.Join(sb.dir, consoleFile))
	if len(b) > consoleTailBytes {
		b = b[len(b)-consoleTailBytes:]
	}
	r, _ := os.ReadFile(filepath.Join(sb.dir, runtimeLog))
	if len(r) > 0 {
		b = append(append(b, "\nsandbox process log:\n"...), r...)
	}
	return string(b)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
