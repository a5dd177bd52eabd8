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
	// DefaultKillTimeout is how long Kill waits for the sandbox process to
	// go after SIGKILL (upstream's defaultKillTimeout).
	DefaultKillTimeout = 5 * time.Second
	pollInterval       = 20 * time.Millisecond
	// deathWait is how long Exec waits, after losing the agent, to see
	// whether the sandbox process ended.
	deathWait        = time.Second
	consoleTailBytes = 4096
)

// Create creates and boots the sandbox cfg describes and returns once its
// agent answered. ctx bounds the creation only, not the sandbox's life. On
// failure nothing of the sandbox is left behind; a boot failure's error
// carries the tail of the guest console. An existing sandbox of the same
// name is ErrAlreadyExists unless opts.Replace.
func Create(ctx context.Context, rt Runtime, cfg Config, opts ...CreateOption) (*Sandbox, error) {
	rt.abs()
	var co createOptions
	for _, o := range opts {
		o(&co)
	}
	if err := errors.Join(cfg.Validate(), rt.Check()); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// Bind and disk paths are relative to the caller's directory: fix
	// them now.
	cfg.Mounts = append([]Mount(nil), cfg.Mounts...)
	for i, m := range cfg.Mounts {
		if m.Kind == MountBind || m.Kind == MountDisk {
			abs, err := filepath.Abs(m.Source)
			if err != nil {
				return nil, fmt.Errorf("%w: bind %s: %w", ErrInvalidConfig, m.Source, err)
			}
			cfg.Mounts[i].Source = abs
		}
	}
	if err := os.MkdirAll(rt.sandboxesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: create: %w", err)
	}
	if co.replace {
		if err := replace(ctx, rt, cfg.Name, co.replaceTimeout); err != nil {
			return nil, err
		}
	}
	dir := rt.sandboxDir(cfg.Name)
	if sock := SocketPath(dir); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("%w: the agent socket %s is %d bytes, over the %d a Unix socket path may have: use a shorter MSB_HOME or sandbox name", ErrInvalidConfig, sock, len(sock), maxSocketPath)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: sandbox already exists: sandbox '%s' already exists; remove it, start the stopped sandbox, or recreate with replace", ErrAlreadyExists, cfg.Name)
		}
		return nil, fmt.Errorf("sandbox: create: %w", err)
	}
	sb, err := create(ctx, &rt, cfg, dir)
	if err != nil {
		if st, rerr := ReadState(dir); rerr == nil {
			releaseImage(rt, st)
		}
		os.RemoveAll(dir)
		return nil, err
	}
	return sb, nil
}

// maxSocketPath is the longest Unix socket path (sun_path is 108 bytes
// with the terminating NUL).
const maxSocketPath = 107

// CreateOption changes how Create treats an existing sandbox.
type CreateOption func(*createOptions)

type createOptions struct {
	replace        bool
	replaceTimeout time.Duration
}

// WithReplace makes Create replace an existing sandbox of the same name:
// a running one is stopped (SIGTERM to its process: a graceful stop; after
// timeout, or at once when it is zero, the hard stop, then SIGKILL), then
// its record is removed.
func WithReplace(timeout time.Duration) CreateOption {
	return func(o *createOptions) { o.replace, o.replaceTimeout = true, timeout }
}

// replace removes the sandbox name, stopping it first if it runs.
func replace(ctx context.Context, rt Runtime, name string, timeout time.Duration) error {
	st, err := Get(rt, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	dir := rt.sandboxDir(name)
	if !st.Status.Terminal() && alive(st.PID, dir) {
		// SIGTERM: a graceful stop; SIGINT: the hard stop; SIGKILL last.
		sig, wait := syscall.SIGTERM, timeout
		if timeout <= 0 {
			sig, wait = syscall.SIGINT, hardStopGrace
		}
		syscall.Kill(st.PID, sig)
		deadline := time.Now().Add(wait)
		for alive(st.PID, dir) {
			if time.Now().After(deadline) {
				switch sig {
				case syscall.SIGTERM:
					sig, deadline = syscall.SIGINT, time.Now().Add(hardStopGrace)
				case syscall.SIGINT:
					sig, deadline = syscall.SIGKILL, time.Now().Add(DefaultKillTimeout)
				default:
					return fmt.Errorf("%w: replace %s: sandbox process %d survived SIGKILL", ErrStillRunning, name, st.PID)
				}
				syscall.Kill(st.PID, sig)
			}
			if err := sleepCtx(ctx, pollInterval); err != nil {
				return err
			}
		}
	}
	releaseImage(rt, st)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("sandbox: replace %s: %w", name, err)
	}
	return nil
}

func create(ctx context.Context, rt *Runtime, cfg Config, dir string) (*Sandbox, error) {
	now := time.Now().UTC()
	st := &State{Name: cfg.Name, Status: StatusStarting, Created: now, Socket: SocketPath(dir), Config: cfg}
	if err := writeState(dir, st); err != nil {
		return nil, err
	}
	im, rootPath, err := prepareImage(ctx, rt, &cfg)
	if err != nil {
		return nil, err
	}
	if err := holdImage(ctx, rt, im.Digest(), cfg.Name); err != nil {
		return nil, err
	}
	if _, err := updateState(dir, func(s *State) { s.ImageDigest = im.Digest().String() }); err != nil {
		releaseImage(*rt, &State{Name: cfg.Name, ImageDigest: im.Digest().String()})
		return nil, err
	}
	ic := im.Config()
	boot := bootConfig(cfg, ic)
	if boot.Patches, err = bootPatches(append(scriptPatches(cfg.Scripts), cfg.Patches...), cfg.MemoryMiB); err != nil {
		return nil, err
	}
	if cfg.Network.enabled() {
		boot.Network = guestNetwork()
	}
	spec := vmSpec{
		Kernel: rt.Kernel, Initrd: filepath.Join(dir, initrdFile), Rootfs: rootPath,
		MemoryMiB: int(cfg.MemoryMiB), CPUs: int(cfg.CPUs), Network: cfg.Network,
		MaxDuration: cfg.MaxDuration, IdleTimeout: cfg.IdleTimeout,
		Cmdline: fmt.Sprintf("loglevel=%d", kernelLogLevels[cfg.LogLevel]),
	}
	firstDisk := 1 // the root image is /dev/vda
	switch cfg.RootDisk.kind() {
	case RootDiskManaged:
		if spec.Upper, err = makeRootDisk(dir, cfg.RootDisk); err != nil {
			return nil, err
		}
		boot.Root.Upper.Device = guestUpperDevice
		firstDisk++
	case RootDiskTmpfs:
		if d := cfg.RootDisk; d != nil && d.SizeMiB > 0 {
			boot.Root.Upper.Size = fmt.Sprintf("%dm", d.SizeMiB)
		}
	}
	shares, disks, mounts, err := resolveMounts(rt, cfg.Mounts, firstDisk)
	if err != nil {
		return nil, err
	}
	spec.Shares, spec.Disks = shares, disks
	boot.Mounts = append(boot.Mounts, mounts...)
	if err := writeInitramfs(rt.Agent, filepath.Join(dir, initrdFile), boot); err != nil {
		return nil, err
	}
	if spec.Upper != "" && len(boot.Patches) > 0 {
		// The disk keeps the patched files: later boots must not patch
		// again (a Text patch would find its file and fail).
		again := *boot
		again.Patches = nil
		spec.RestartInitrd = filepath.Join(dir, restartInitrdFile)
		if err := writeInitramfs(rt.Agent, spec.RestartInitrd, &again); err != nil {
			return nil, err
		}
	}
	if _, err := updateState(dir, func(s *State) {
		s.Workdir, s.User = boot.Workdir, boot.User
		s.DefaultCommand = defaultCommand(cfg, ic)
	}); err != nil {
		return nil, err
	}
	return boot1(ctx, rt, dir, &spec, !cfg.Detached)
}

// defaultPath is the guest PATH when neither the image nor the
// configuration sets one (the agent's default).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ScriptsDir holds Config.Scripts in the guest; it comes first on PATH.
const ScriptsDir = "/.msb/scripts"

// scriptPatches installs scripts as executable files in ScriptsDir.
func scriptPatches(scripts map[string]string) []Patch {
	if len(scripts) == 0 {
		return nil
	}
	names := make([]string, 0, len(scripts))
	for n := range scripts {
		names = append(names, n)
	}
	sort.Strings(names)
	mode := uint32(0o755)
	ps := []Patch{{Kind: PatchMkdir, Path: ScriptsDir, Mode: &mode}}
	for _, n := range names {
		ps = append(ps, Patch{Kind: PatchText, Path: ScriptsDir + "/" + n, Content: scripts[n], Mode: &mode, Replace: true})
	}
	return ps
}

// defaultCommand is what ExecDefault runs: the entrypoint and cmd of cfg,
// else the image's.
func defaultCommand(cfg Config, ic oci.ImageConfig) []string {
	ep, cmd := ic.Entrypoint, ic.Cmd
	if cfg.Entrypoint != nil {
		ep = cfg.Entrypoint
		if cfg.Cmd == nil {
			cmd = nil // a new entrypoint drops the image's arguments, as docker does
		}
	}
	if cfg.Cmd != nil {
		cmd = cfg.Cmd
	}
	return append(append([]string(nil), ep...), cmd...)
}

// boot1 writes vm.json, starts the sandbox process and waits for its
// agent. attached arms the owner watchdog.
func boot1(ctx context.Context, rt *Runtime, dir string, spec *vmSpec, attached bool) (*Sandbox, error) {
	spec.Watchdog = attached
	b, _ := json.Marshal(spec)
	if err := writeFileAtomic(filepath.Join(dir, vmFile), b); err != nil {
		return nil, err
	}
	st, err := updateState(dir, func(s *State) { s.Status, s.Exit, s.PID, s.Killed = StatusStarting, "", 0, false })
	if err != nil {
		return nil, err
	}
	sb := &Sandbox{
		rt: *rt, dir: dir, name: st.Name, workdir: st.Workdir, user: st.User,
		done: make(chan struct{}),
	}
	// The limits count from readiness (the ready file, below).
	os.Remove(filepath.Join(dir, activityFile))
	os.Remove(filepath.Join(dir, readyFile))
	if err := sb.spawn(attached, b); err != nil {
		return nil, err
	}
	if _, err := updateState(dir, func(s *State) { s.PID = sb.pid }); err != nil {
		sb.kill()
		return nil, err
	}
	c, err := sb.waitReady(ctx)
	if err != nil {
		sb.kill()
		sb.release()
		return nil, err
	}
	sb.client = c
	if f, err := os.Create(filepath.Join(dir, readyFile)); err == nil {
		f.Close()
	}
	if _, err := updateState(dir, func(s *State) {
		if !s.Status.Terminal() {
			s.Status = StatusRunning
		}
	}); err != nil {
		sb.kill()
		sb.release()
		return nil, err
	}
	return sb, nil
}

// Start boots the stopped or crashed sandbox name again with its
// configuration. attached: the returned handle owns it (see Create).
func Start(ctx context.Context, rt Runtime, name string, attached bool) (*Sandbox, error) {
	rt.abs()
	if !validName(name) {
		return nil, fmt.Errorf("%w: sandbox name %q", ErrInvalidConfig, name)
	}
	if err := rt.Check(); err != nil {
		return nil, err
	}
	st, err := Get(rt, name)
	if err != nil {
		return nil, err
	}
	if !st.Status.Terminal() {
		return nil, fmt.Errorf("%w: %s is %s", ErrStillRunning, name, st.Status)
	}
	dir := rt.sandboxDir(name)
	b, err := os.ReadFile(filepath.Join(dir, vmFile))
	if err != nil {
		return nil, fmt.Errorf("sandbox: start %s: %w", name, err)
	}
	var spec vmSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("sandbox: start %s: %s: %w", name, vmFile, err)
	}
	if spec.RestartInitrd != "" {
		spec.Initrd = spec.RestartInitrd
	}
	sb, err := boot1(ctx, &rt, dir, &spec, attached)
	if err != nil {
		updateState(dir, func(s *State) {
			if !s.Status.Terminal() {
				s.Status, s.Exit = StatusCrashed, "start failed: "+err.Error()
			}
		})
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
	if len(cfg.Scripts) > 0 {
		path, ok := env["PATH"]
		if !ok {
			order = append(order, "PATH")
			path = defaultPath
		}
		env["PATH"] = ScriptsDir + ":" + path
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
// The process gets a session of its own (a terminal's ^C to the owner does
// not reach it); an attached one inherits the read end of the watchdog
// pipe, whose end stops it.
func (sb *Sandbox) spawn(attached bool, spec []byte) error {
	logf, err := os.OpenFile(filepath.Join(sb.dir, runtimeLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("sandbox: runtime log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(sb.rt.Binary, HiddenCommand, sb.dir)
	cmd.Dir = sb.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The configuration travels over an inherited pipe (specFD), not
	// argv; the watchdog pipe (watchdogFD) follows when attached.
	specRead, specWrite, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: spec pipe: %w", err)
	}
	cmd.ExtraFiles = []*os.File{specRead}
	var wdRead, wdWrite *os.File
	if attached {
		if wdRead, wdWrite, err = os.Pipe(); err != nil {
			specRead.Close()
			specWrite.Close()
			return fmt.Errorf("sandbox: watchdog pipe: %w", err)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, wdRead)
	}
	err = cmd.Start()
	specRead.Close()
	if wdRead != nil {
		wdRead.Close()
	}
	if err != nil {
		specWrite.Close()
		if wdWrite != nil {
			wdWrite.Close()
		}
		return fmt.Errorf("%w: start sandbox process: %w", ErrBoot, err)
	}
	// The child reads the spec first thing; a write to a child that died
	// fails with EPIPE rather than blocking.
	_, werr := specWrite.Write(spec)
	specWrite.Close()
	sb.cmd, sb.pid, sb.watchdog = cmd, cmd.Process.Pid, wdWrite
	go func() {
		sb.waitErr = cmd.Wait()
		close(sb.done)
	}()
	if werr != nil {
		sb.kill()
		return fmt.Errorf("%w: send the configuration to the sandbox process: %w", ErrBoot, werr)
	}
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
			class := ErrBoot
			if st, err := ReadState(sb.dir); err == nil && st.GuestStatus != nil {
				switch bootcfg.Status(*st.GuestStatus) {
				case bootcfg.StatusPatchFailed:
					class = ErrPatchFailed
				case bootcfg.StatusBadConfig:
					class = ErrInvalidConfig
				}
			}
			return nil, fmt.Errorf("%w: sandbox process ended (%v) before the agent answered; console:\n%s", class, sb.waitErr, sb.consoleTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, ctx.Err()
			}
			sb.requestDiagnosis()
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
