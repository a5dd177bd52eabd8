// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// Sandbox is a live handle on a running sandbox: the one CreateSandbox or
// StartSandbox returned, or one SandboxHandle.Connect made. It is safe for
// concurrent use.
type Sandbox struct {
	sb *sandbox.Sandbox

	mu     sync.Mutex
	closed bool
}

// CreateSandbox creates the sandbox name from opts, boots it and returns
// once it accepts commands. ctx bounds the creation only. Problems with the
// configuration are reported together as ErrInvalidConfig; an existing
// sandbox of the same name is ErrSandboxAlreadyExists unless WithReplace.
//
// Unless WithDetached, the returned handle owns the sandbox: Close, or the
// end of this process, stops it (its record stays for StartSandbox).
func CreateSandbox(ctx context.Context, name string, opts ...SandboxOption) (*Sandbox, error) {
	cfg := SandboxConfig{Name: name}
	for _, o := range opts {
		o(&cfg)
	}
	sc, err := cfg.sandboxConfig()
	if err != nil {
		return nil, err
	}
	var copts []sandbox.CreateOption
	if cfg.Replace {
		timeout := sandbox.DefaultStopTimeout
		if cfg.ReplaceWithTimeout != nil {
			timeout = *cfg.ReplaceWithTimeout
		}
		copts = append(copts, sandbox.WithReplace(timeout))
	}
	sb, err := sandbox.Create(ctx, sandbox.DefaultRuntime(), sc, copts...)
	if err != nil {
		return nil, wrap(err)
	}
	return &Sandbox{sb: sb}, nil
}

// sandboxConfig converts c for pkg/sandbox.
func (c *SandboxConfig) sandboxConfig() (sandbox.Config, error) {
	net, err := sandboxNetwork(c)
	if err != nil {
		return sandbox.Config{}, err
	}
	sc := sandbox.Config{
		Name: c.Name, Image: c.Image, MemoryMiB: c.MemoryMiB, CPUs: c.CPUs,
		Env: c.Env, Workdir: c.Workdir, User: c.User, Hostname: c.Hostname,
		Detached: c.Detached, Labels: c.Labels, Network: net,
		Patches:    sandboxPatches(c.Patches),
		Entrypoint: c.Entrypoint, MaxDuration: c.MaxDuration, Ephemeral: c.Ephemeral,
		IdleTimeout: c.IdleTimeout,
	}
	if c.CmdSet {
		sc.Cmd = append([]string{}, c.Cmd...)
	}
	sc.PullPolicy = string(c.PullPolicy)
	sc.Scripts, sc.Shell = c.Scripts, c.Shell
	sc.LogLevel = string(c.LogLevel)
	if c.QuietLogs {
		sc.LogLevel = "off"
	}
	if sc.Mounts, err = sandboxMounts(c.Volumes); err != nil {
		return sandbox.Config{}, err
	}
	if c.RootDisk != nil {
		sc.RootDisk = &sandbox.RootDisk{Kind: string(c.RootDisk.kind), SizeMiB: c.RootDisk.sizeMiB}
	}
	if sc.Registry, err = c.registry.sandboxRegistry(); err != nil {
		return sandbox.Config{}, err
	}
	return sc, nil
}

// StartSandbox boots the stopped sandbox name again; the handle owns it as
// CreateSandbox's does. A running sandbox is ErrSandboxStillRunning.
func StartSandbox(ctx context.Context, name string) (*Sandbox, error) {
	return startSandbox(ctx, name, true)
}

// StartSandboxDetached boots the stopped sandbox name again, detached.
func StartSandboxDetached(ctx context.Context, name string) (*Sandbox, error) {
	return startSandbox(ctx, name, false)
}

func startSandbox(ctx context.Context, name string, attached bool) (*Sandbox, error) {
	sb, err := sandbox.Start(ctx, sandbox.DefaultRuntime(), name, attached)
	if err != nil {
		return nil, wrap(err)
	}
	return &Sandbox{sb: sb}, nil
}

// RemoveSandbox deletes the record of a stopped or crashed sandbox; a
// running one is ErrSandboxStillRunning.
func RemoveSandbox(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.Remove(sandbox.DefaultRuntime(), name))
}

// Name returns the sandbox's name.
func (s *Sandbox) Name() string { return s.sb.Name() }

// check fails with ErrInvalidHandle after Close and ErrCancelled when ctx
// ended.
func (s *Sandbox) check(ctx context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return &Error{Kind: ErrInvalidHandle, Message: "sandbox handle " + s.sb.Name() + " is closed"}
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return nil
}

// Exec runs cmd with args in the sandbox and collects its output. A
// non-zero exit is a result (ExitCode), not an error; a command that cannot
// start is ErrExecFailed; a timeout is ErrExecTimeout.
func (s *Sandbox) Exec(ctx context.Context, cmd string, args []string, opts ...ExecOption) (*ExecOutput, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	c := execConfig(opts)
	ec := c.sandboxExec(append([]string{cmd}, args...))
	ec.StdinPipe = false // a collected exec has no one to write to the pipe
	out, err := s.sb.Exec(ctx, ec)
	if err != nil {
		return nil, wrap(err)
	}
	if out.TimedOut {
		return nil, &Error{Kind: ErrExecTimeout, Message: "exec timed out after " + c.Timeout.String()}
	}
	return &ExecOutput{stdout: out.Stdout, stderr: out.Stderr, code: out.Code}, nil
}

func execConfig(opts []ExecOption) ExecConfig {
	var c ExecConfig
	for _, o := range opts {
		o(&c)
	}
	return c
}

func (c *ExecConfig) sandboxExec(argv []string) sandbox.ExecConfig {
	ec := sandbox.ExecConfig{
		Argv: argv, Dir: c.Cwd, User: c.User, Timeout: c.Timeout,
		Stdin: c.Stdin, StdinPipe: c.StdinPipe, TTY: c.TTY,
	}
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ec.Env = append(ec.Env, k+"="+c.Env[k])
	}
	return ec
}

// Shell runs command with /bin/sh -c.
func (s *Sandbox) Shell(ctx context.Context, command string, opts ...ExecOption) (*ExecOutput, error) {
	return s.Exec(ctx, "/bin/sh", []string{"-c", command}, opts...)
}

// ExecDefault runs the image's entrypoint and cmd (or those of
// WithEntrypoint and WithCmd); none is ErrNoDefaultCommand.
func (s *Sandbox) ExecDefault(ctx context.Context, opts ...ExecOption) (*ExecOutput, error) {
	argv, err := s.defaultCommand()
	if err != nil {
		return nil, err
	}
	return s.Exec(ctx, argv[0], argv[1:], opts...)
}

func (s *Sandbox) defaultCommand() ([]string, error) {
	st, err := s.sb.State()
	if err != nil {
		return nil, wrap(err)
	}
	if len(st.DefaultCommand) == 0 {
		return nil, &Error{Kind: ErrNoDefaultCommand, Message: "sandbox " + s.sb.Name() + ": the image has no entrypoint or cmd, and none was configured"}
	}
	return st.DefaultCommand, nil
}

// StopOption configures Stop.
type StopOption func(*stopOptions)

type stopOptions struct{ timeout time.Duration }

// WithStopTimeout sets the grace period between the shutdown request and
// the kill (rounded up to a millisecond); default 10 seconds.
func WithStopTimeout(d time.Duration) StopOption {
	return func(o *stopOptions) { o.timeout = ceilDuration(d, time.Millisecond) }
}

// KillOption configures Kill.
type KillOption func(*killOptions)

type killOptions struct{ timeout time.Duration }

// WithKillTimeout sets how long Kill waits to see the sandbox gone
// (rounded up to a millisecond); default 5 seconds.
func WithKillTimeout(d time.Duration) KillOption {
	return func(o *killOptions) { o.timeout = ceilDuration(d, time.Millisecond) }
}

// Stop shuts the sandbox down gracefully (the guest syncs and powers off)
// and waits for it, killing it after the grace period. ctx bounds the
// wait. Stopping a stopped sandbox does nothing.
func (s *Sandbox) Stop(ctx context.Context, opts ...StopOption) error {
	var o stopOptions
	for _, f := range opts {
		f(&o)
	}
	return wrap(s.sb.Stop(ctx, o.timeout))
}

// Kill ends the sandbox at once (SIGKILL of its process; unsynced guest
// writes may be lost) and waits to see it gone.
func (s *Sandbox) Kill(ctx context.Context, opts ...KillOption) error {
	var o killOptions
	for _, f := range opts {
		f(&o)
	}
	return wrap(s.sb.Kill(ctx, o.timeout))
}

// RequestStop asks the sandbox to stop gracefully and returns at once.
func (s *Sandbox) RequestStop(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.RequestStop(sandbox.DefaultRuntime(), s.sb.Name()))
}

// RequestKill kills the sandbox and returns at once.
func (s *Sandbox) RequestKill(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.RequestKill(sandbox.DefaultRuntime(), s.sb.Name()))
}

// RequestDrain asks the sandbox to drain: no new processes, and a stop
// once the running ones ended. It returns at once; the status is draining
// until then.
func (s *Sandbox) RequestDrain(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.RequestDrain(sandbox.DefaultRuntime(), s.sb.Name()))
}

// WaitUntilStopped waits until the sandbox is stopped or crashed.
func (s *Sandbox) WaitUntilStopped(ctx context.Context) (*SandboxStopResult, error) {
	return waitUntilStopped(ctx, s.sb.Name())
}

// Detach lets the sandbox outlive this handle and this process. The
// handle is invalid afterwards.
func (s *Sandbox) Detach(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.sb.Detach(); err != nil {
		return wrap(err)
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.sb.Close()
	return nil
}

// Close releases the handle. A sandbox the handle owns (created or started
// attached, not detached) stops gracefully in the background; use
// WaitUntilStopped to see it end. A second Close is ErrInvalidHandle.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &Error{Kind: ErrInvalidHandle, Message: "sandbox handle " + s.sb.Name() + " is already closed"}
	}
	s.closed = true
	s.sb.Close()
	return nil
}

// OwnsLifecycle reports whether closing this handle stops the sandbox.
func (s *Sandbox) OwnsLifecycle() (bool, error) {
	if err := s.check(context.Background()); err != nil {
		return false, err
	}
	return s.sb.OwnsLifecycle(), nil
}

// OwnsLifecycleOrFalse is OwnsLifecycle with errors read as false.
func (s *Sandbox) OwnsLifecycleOrFalse() bool {
	ok, _ := s.OwnsLifecycle()
	return ok
}

// SandboxPingResult is the outcome of a Ping.
type SandboxPingResult struct {
	Name    string
	Latency time.Duration
}

// Ping checks that the guest agent answers, and how fast.
func (s *Sandbox) Ping(ctx context.Context) (*SandboxPingResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	c, err := s.sb.Agent()
	if err != nil {
		return nil, wrap(err)
	}
	start := time.Now()
	if _, err := c.Stat(ctx, "/"); err != nil {
		return nil, wrap(err)
	}
	return &SandboxPingResult{Name: s.sb.Name(), Latency: time.Since(start)}, nil
}

// SandboxTouchResult is the outcome of a Touch.
type SandboxTouchResult struct {
	Name string
	// ActivitySeq grows by one with every Touch.
	ActivitySeq uint64
}

// Touch records activity, resetting the idle timer (WithIdleTimeout). A
// stopped sandbox is ErrSandboxNotRunning; Touch never starts one.
func (s *Sandbox) Touch(ctx context.Context) (*SandboxTouchResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return touch(s.sb.Name())
}

func touch(name string) (*SandboxTouchResult, error) {
	seq, err := sandbox.Touch(sandbox.DefaultRuntime(), name)
	if err != nil {
		return nil, wrap(err)
	}
	return &SandboxTouchResult{Name: name, ActivitySeq: seq}, nil
}

// ExecOutput is a finished command's output. The methods of a nil
// *ExecOutput (what a failed Exec returns) report empty output and exit
// code -1, so that logging a failure's output cannot panic.
type ExecOutput struct {
	stdout, stderr []byte
	code           int
}

// Stdout returns standard output as a string holding the raw bytes
// (invalid UTF-8 is kept, unlike upstream's "").
func (o *ExecOutput) Stdout() string { return string(o.StdoutBytes()) }

// StdoutBytes returns standard output.
func (o *ExecOutput) StdoutBytes() []byte {
	if o == nil {
		return nil
	}
	return o.stdout
}

// Stderr returns standard error as a string holding the raw bytes.
func (o *ExecOutput) Stderr() string { return string(o.StderrBytes()) }

// StderrBytes returns standard error.
func (o *ExecOutput) StderrBytes() []byte {
	if o == nil {
		return nil
	}
	return o.stderr
}

// ExitCode returns the exit code, or -1 when a signal ended the process.
func (o *ExecOutput) ExitCode() int {
	if o == nil {
		return -1
	}
	return o.code
}

// Success reports a zero exit code.
func (o *ExecOutput) Success() bool { return o.ExitCode() == 0 }

// SandboxStopResult is how a sandbox ended.
type SandboxStopResult struct {
	Name       string
	Status     SandboxStatus
	ExitCode   *int
	Signal     *int
	ObservedAt time.Time
	// Source says how it ended (the VM's exit, "killed", ...).
	Source *string
}

func waitUntilStopped(ctx context.Context, name string) (*SandboxStopResult, error) {
	st, err := sandbox.WaitStopped(ctx, sandbox.DefaultRuntime(), name)
	if err != nil {
		return nil, wrap(err)
	}
	r := &SandboxStopResult{Name: st.Name, Status: SandboxStatus(st.Status), ObservedAt: time.Now()}
	if st.Exit != "" {
		src := st.Exit
		r.Source = &src
	}
	return r, nil
}
