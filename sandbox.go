// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"sort"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// Sandbox is a running sandbox created by this process. It is safe for
// concurrent use.
type Sandbox struct {
	sb *sandbox.Sandbox
}

// CreateSandbox creates the sandbox name from opts, boots it and returns
// once it accepts commands. ctx bounds the creation only. Problems with the
// configuration are reported together as ErrInvalidConfig; an existing
// sandbox of the same name is ErrSandboxAlreadyExists.
func CreateSandbox(ctx context.Context, name string, opts ...SandboxOption) (*Sandbox, error) {
	cfg := SandboxConfig{Name: name}
	for _, o := range opts {
		o(&cfg)
	}
	sb, err := sandbox.Create(ctx, sandbox.DefaultRuntime(), sandbox.Config{
		Name: cfg.Name, Image: cfg.Image, MemoryMiB: cfg.MemoryMiB, CPUs: cfg.CPUs,
		Env: cfg.Env, Workdir: cfg.Workdir, User: cfg.User, Hostname: cfg.Hostname,
		Detached: cfg.Detached,
		Patches:  sandboxPatches(cfg.Patches),
	})
	if err != nil {
		return nil, wrap(err)
	}
	return &Sandbox{sb: sb}, nil
}

// RemoveSandbox deletes the record of a stopped or crashed sandbox.
func RemoveSandbox(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.Remove(sandbox.DefaultRuntime(), name))
}

// Name returns the sandbox's name.
func (s *Sandbox) Name() string { return s.sb.Name() }

// Exec runs cmd with args in the sandbox and collects its output. A
// non-zero exit is a result (ExitCode), not an error; a command that cannot
// start is ErrExecFailed; a timeout is ErrExecTimeout.
func (s *Sandbox) Exec(ctx context.Context, cmd string, args []string, opts ...ExecOption) (*ExecOutput, error) {
	var c ExecConfig
	for _, o := range opts {
		o(&c)
	}
	ec := sandbox.ExecConfig{
		Argv: append([]string{cmd}, args...), Dir: c.Cwd, User: c.User,
		Timeout: c.Timeout, Stdin: c.Stdin,
	}
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ec.Env = append(ec.Env, k+"="+c.Env[k])
	}
	out, err := s.sb.Exec(ctx, ec)
	if err != nil {
		return nil, wrap(err)
	}
	if out.TimedOut {
		return nil, &Error{Kind: ErrExecTimeout, Message: "exec timed out after " + c.Timeout.String()}
	}
	return &ExecOutput{stdout: out.Stdout, stderr: out.Stderr, code: out.Code}, nil
}

// Shell runs command with /bin/sh -c.
func (s *Sandbox) Shell(ctx context.Context, command string, opts ...ExecOption) (*ExecOutput, error) {
	return s.Exec(ctx, "/bin/sh", []string{"-c", command}, opts...)
}

// Stop shuts the sandbox down gracefully (the guest powers off) and waits
// for it, killing it after 10 seconds. ctx bounds the wait. Stopping a
// stopped sandbox does nothing.
func (s *Sandbox) Stop(ctx context.Context) error {
	return wrap(s.sb.Stop(ctx, 0))
}

// ExecOutput is a finished command's output.
type ExecOutput struct {
	stdout, stderr []byte
	code           int
}

// Stdout returns standard output as a string holding the raw bytes
// (invalid UTF-8 is kept, unlike upstream's "").
func (o *ExecOutput) Stdout() string { return string(o.stdout) }

// StdoutBytes returns standard output.
func (o *ExecOutput) StdoutBytes() []byte { return o.stdout }

// Stderr returns standard error as a string holding the raw bytes.
func (o *ExecOutput) Stderr() string { return string(o.stderr) }

// StderrBytes returns standard error.
func (o *ExecOutput) StderrBytes() []byte { return o.stderr }

// ExitCode returns the exit code, or -1 when a signal ended the process.
func (o *ExecOutput) ExitCode() int { return o.code }

// Success reports a zero exit code.
func (o *ExecOutput) Success() bool { return o.code == 0 }

// SandboxStatus is a sandbox's lifecycle state.
type SandboxStatus string

// Sandbox statuses.
const (
	SandboxStatusStarting SandboxStatus = "starting"
	SandboxStatusRunning  SandboxStatus = "running"
	SandboxStatusStopped  SandboxStatus = "stopped"
	SandboxStatusCrashed  SandboxStatus = "crashed"
)

// SandboxHandle is a snapshot of a sandbox's persisted record.
type SandboxHandle struct {
	st *sandbox.State
}

// GetSandbox looks up the sandbox name without connecting to it. A sandbox
// whose process died is reported as crashed.
func GetSandbox(ctx context.Context, name string) (*SandboxHandle, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	st, err := sandbox.Get(sandbox.DefaultRuntime(), name)
	if err != nil {
		return nil, wrap(err)
	}
	return &SandboxHandle{st: st}, nil
}

// Name returns the sandbox's name.
func (h *SandboxHandle) Name() string { return h.st.Name }

// Status returns the status at the time of the lookup.
func (h *SandboxHandle) Status() SandboxStatus { return SandboxStatus(h.st.Status) }

// CreatedAt returns the creation time.
func (h *SandboxHandle) CreatedAt() time.Time { return h.st.Created }

// UpdatedAt returns the time of the last state change.
func (h *SandboxHandle) UpdatedAt() time.Time { return h.st.Updated }
