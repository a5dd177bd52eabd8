// SPDX-License-Identifier: Apache-2.0

package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// StdinMode says where a process's standard input comes from.
type StdinMode int

const (
	// StdinNull connects stdin to /dev/null.
	StdinNull StdinMode = iota
	// StdinPipe streams it: WriteStdin, then CloseStdin for EOF.
	StdinPipe
	// StdinBytes sends ExecConfig.StdinData, then EOF.
	StdinBytes
)

// Rlimit is one resource limit, by upstream's resource name (cpu fsize data
// stack core rss nproc nofile memlock as locks sigpending msgqueue nice
// rtprio rttime).
type Rlimit struct {
	Resource   string
	Soft, Hard uint64
}

// ExecConfig describes a process to run in the guest.
type ExecConfig struct {
	// Argv is the program and its arguments; no shell is involved. A
	// program without a slash is looked up in the process's PATH.
	Argv []string
	// Env (KEY=VALUE) overlays the agent's base environment.
	Env []string
	// Dir is the working directory; "" means "/".
	Dir string
	// User is "name", "uid", "name:group" or "uid:gid"; "" keeps the
	// agent's user.
	User string
	// Rlimits are set before the program runs its first instruction.
	Rlimits []Rlimit
	// Stdin is the input mode; StdinData is sent when it is StdinBytes.
	Stdin     StdinMode
	StdinData []byte
	// TTY runs the process on a pseudo-terminal of Rows x Cols (zero means
	// 24 x 80); stderr is merged into stdout and stdin is always writable.
	TTY        bool
	Rows, Cols uint16
	// Timeout, if positive, has the guest kill the process group with
	// SIGKILL at the deadline (rounded up to a millisecond).
	Timeout time.Duration
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when a signal killed the process.
	Code int
	// Signal is the signal that killed it, or 0.
	Signal syscall.Signal
	// TimedOut reports a kill at ExecConfig.Timeout.
	TimedOut bool
}

// Success reports a zero exit code.
func (s ExitStatus) Success() bool { return s.Code == 0 }

// EventKind is the kind of an Event.
type EventKind int

// Event kinds.
const (
	EventStdout EventKind = iota + 1
	EventStderr
	EventExit
)

// Event is one piece of a running process's output, or its end.
type Event struct {
	Kind   EventKind
	Data   []byte     // EventStdout, EventStderr: raw bytes
	Status ExitStatus // EventExit
}

// Output is a finished process's collected output.
type Output struct {
	Stdout, Stderr []byte
	Status         ExitStatus
}

// Process is a process running in the guest. Recv is for one goroutine;
// the other methods may be called concurrently with it.
type Process struct {
	st  *stream
	pid int
	cfg ExecConfig

	stopFeed  context.CancelFunc
	feeder    sync.WaitGroup
	closeOnce sync.Once

	mu     sync.Mutex // guards status
	status *ExitStatus
}

// Exec starts a process and returns once it runs. A process that cannot
// start gives a *guestagent.SpawnError (matching guestagent.ErrSpawn). ctx
// bounds the start only; if it ends first, the process may still start and
// is left to run.
func (c *Client) Exec(ctx context.Context, cfg ExecConfig) (*Process, error) {
	if cfg.TTY && !c.sess.Has(guestagent.CapTTY) {
		return nil, fmt.Errorf("host: exec: guest lacks the %q capability", guestagent.CapTTY)
	}
	if len(cfg.Rlimits) > 0 && !c.sess.Has(guestagent.CapRlimits) {
		return nil, fmt.Errorf("host: exec: guest lacks the %q capability", guestagent.CapRlimits)
	}
	req := &agentpb.ExecRequest{
		Argv: cfg.Argv, Env: cfg.Env, Cwd: cfg.Dir, User: cfg.User,
		Tty: cfg.TTY, Rows: uint32(cfg.Rows), Cols: uint32(cfg.Cols),
	}
	if cfg.Timeout > 0 {
		req.TimeoutMs = uint64((cfg.Timeout + time.Millisecond - 1) / time.Millisecond)
	}
	if cfg.Stdin != StdinNull {
		req.Stdin = agentpb.StdinMode_STDIN_PIPE
	}
	for _, r := range cfg.Rlimits {
		req.Rlimits = append(req.Rlimits, &agentpb.Rlimit{Resource: r.Resource, Soft: r.Soft, Hard: r.Hard})
	}
	k := kindExec
	if cfg.TTY {
		k = kindExecTTY
	}
	st, err := c.open(ctx, k, &agentpb.Frame{Msg: &agentpb.Frame_Exec{Exec: req}})
	if err != nil {
		return nil, fmt.Errorf("host: exec: %w", err)
	}
	f, err := st.next(ctx)
	if err != nil {
		st.abandon(context.Background())
		return nil, fmt.Errorf("host: exec: %w", err)
	}
	switch m := f.Msg.(type) {
	case *agentpb.Frame_Started:
		p := &Process{st: st, pid: int(m.Started.GetPid()), cfg: cfg}
		if cfg.Stdin == StdinBytes {
			fctx, cancel := context.WithCancel(context.Background())
			p.stopFeed = cancel
			c.wg.Add(1)
			p.feeder.Go(func() {
				defer c.wg.Done()
				if _, err := st.sendData(fctx, agentpb.Channel_CHANNEL_STDIN, cfg.StdinData); err == nil {
					_ = st.write(fctx, &agentpb.Frame{Msg: &agentpb.Frame_CloseWrite{CloseWrite: &agentpb.CloseWrite{}}})
				}
			})
		}
		return p, nil
	case *agentpb.Frame_Error:
		return nil, guestagent.ErrorFromProto("exec", m.Error)
	}
	// check() only lets Started, Exit and Error through first; an Exit
	// before Started is a guest bug.
	err = guestagent.ProtocolErrorf("exec stream %d ended without starting", st.id)
	c.fail(err)
	return nil, err
}

// PID returns the process id in the guest.
func (p *Process) PID() int { return p.pid }

// Recv returns the next event: output as it arrives (raw bytes), then one
// EventExit, then io.EOF.
func (p *Process) Recv(ctx context.Context) (Event, error) {
	for {
		f, err := p.st.next(ctx)
		if err != nil {
			return Event{}, err
		}
		switch m := f.Msg.(type) {
		case *agentpb.Frame_Data:
			k := EventStdout
			if m.Data.GetChannel() == agentpb.Channel_CHANNEL_STDERR {
				k = EventStderr
			}
			if len(m.Data.GetData()) == 0 {
				continue
			}
			return Event{Kind: k, Data: m.Data.GetData()}, nil
		case *agentpb.Frame_Exit:
			s := ExitStatus{Code: int(m.Exit.GetCode()), Signal: syscall.Signal(m.Exit.GetSignal()), TimedOut: m.Exit.GetTimedOut()}
			if s.Signal < 0 || s.Signal > 64 {
				s.Signal = 0
			}
			p.mu.Lock()
			p.status = &s
			p.mu.Unlock()
			return Event{Kind: EventExit, Status: s}, nil
		case *agentpb.Frame_Error:
			return Event{}, guestagent.ErrorFromProto("exec", m.Error)
		}
	}
}

// WriteStdin sends b to the process's stdin (StdinPipe or TTY). It blocks
// while the guest's window is full, that is while the process does not read.
func (p *Process) WriteStdin(ctx context.Context, b []byte) (int, error) {
	if p.cfg.Stdin != StdinPipe && !p.cfg.TTY {
		return 0, errors.New("host: write stdin: stdin is not a pipe")
	}
	if err := p.st.isOpen(); err != nil {
		return 0, err
	}
	return p.st.sendData(ctx, agentpb.Channel_CHANNEL_STDIN, b)
}

// CloseStdin sends EOF on stdin. With a TTY the terminal stays open.
func (p *Process) CloseStdin(ctx context.Context) error {
	if err := p.st.isOpen(); err != nil {
		return err
	}
	return p.st.write(ctx, &agentpb.Frame{Msg: &agentpb.Frame_CloseWrite{CloseWrite: &agentpb.CloseWrite{}}})
}

// Stdin returns an io.WriteCloser over WriteStdin and CloseStdin, for
// io.Copy; its calls are not bounded by a context.
func (p *Process) Stdin() io.WriteCloser { return stdinWriter{p} }

type stdinWriter struct{ p *Process }

func (w stdinWriter) Write(b []byte) (int, error) { return w.p.WriteStdin(context.Background(), b) }
func (w stdinWriter) Close() error                { return w.p.CloseStdin(context.Background()) }

// Signal sends sig to the process's group.
func (p *Process) Signal(ctx context.Context, sig syscall.Signal) error {
	if err := p.st.isOpen(); err != nil {
		return err
	}
	return p.st.write(ctx, &agentpb.Frame{Msg: &agentpb.Frame_Signal{Signal: &agentpb.Signal{Signal: int32(sig)}}})
}

// Kill sends SIGKILL to the process's group.
func (p *Process) Kill(ctx context.Context) error { return p.Signal(ctx, syscall.SIGKILL) }

// Resize changes the terminal size (TTY only; ignored otherwise).
func (p *Process) Resize(ctx context.Context, rows, cols uint16) error {
	if err := p.st.isOpen(); err != nil {
		return err
	}
	return p.st.write(ctx, &agentpb.Frame{Msg: &agentpb.Frame_Resize{Resize: &agentpb.Resize{Rows: uint32(rows), Cols: uint32(cols)}}})
}

// Wait discards the remaining output and returns the exit status.
func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	for {
		ev, err := p.Recv(ctx)
		if err == io.EOF {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.status != nil {
				return *p.status, nil
			}
		}
		if err != nil {
			return ExitStatus{}, err
		}
		if ev.Kind == EventExit {
			return ev.Status, nil
		}
	}
}

// Output collects the remaining output and the exit status. Nothing caps
// its size: the caller asked for all of it.
func (p *Process) Output(ctx context.Context) (*Output, error) {
	out := &Output{}
	for {
		ev, err := p.Recv(ctx)
		if err != nil {
			return out, err
		}
		switch ev.Kind {
		case EventStdout:
			out.Stdout = append(out.Stdout, ev.Data...)
		case EventStderr:
			out.Stderr = append(out.Stderr, ev.Data...)
		case EventExit:
			out.Status = ev.Status
			return out, nil
		}
	}
}

// Close releases the process's stream without killing it: the guest stops
// sending its output and the process runs on. It waits for the stdin
// feeder. It is idempotent.
func (p *Process) Close() error {
	p.closeOnce.Do(func() {
		if p.stopFeed != nil {
			p.stopFeed()
		}
		p.feeder.Wait()
		p.st.abandon(context.Background())
	})
	return nil
}

// Run runs a process to its end and collects its output. A non-zero exit is
// not an error. A process killed at its timeout gives its output so far and
// an error matching guestagent.ErrTimeout.
func (c *Client) Run(ctx context.Context, cfg ExecConfig) (*Output, error) {
	p, err := c.Exec(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	out, err := p.Output(ctx)
	if err != nil {
		return out, fmt.Errorf("host: exec: %w", err)
	}
	if out.Status.TimedOut {
		return out, fmt.Errorf("host: exec %s: %w after %v", cfg.Argv[0], guestagent.ErrTimeout, cfg.Timeout)
	}
	return out, nil
}
