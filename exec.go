// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"io"
	"iter"
	"strconv"
	"sync"
	"syscall"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

// ExecEventKind is the kind of an ExecEvent.
type ExecEventKind int

// Event kinds, in upstream's order.
const (
	// ExecEventStarted: the process runs; PID is set.
	ExecEventStarted ExecEventKind = iota
	// ExecEventStdout and ExecEventStderr carry output bytes in Data.
	ExecEventStdout
	ExecEventStderr
	// ExecEventExited: the process ended; ExitCode is set (-1 after a
	// signal).
	ExecEventExited
	// ExecEventFailed: the process never started; Failure says why. It is
	// the last event before Done.
	ExecEventFailed
	// ExecEventStdinError: a write to stdin failed; not the end.
	ExecEventStdinError
	// ExecEventDone: the stream ended; Recv returns it from then on.
	ExecEventDone
)

// ExecFailure says why a process did not start, or why a stdin write
// failed.
type ExecFailure struct {
	// Kind is upstream's spelling: not_found, permission_denied,
	// not_executable, bad_cwd, bad_args, resource_limit,
	// user_setup_failed, pty_setup_failed, other.
	Kind      string
	Errno     *int
	ErrnoName string
	Message   string
	Path      string
}

// ExecEvent is one event of a streamed command.
type ExecEvent struct {
	Kind     ExecEventKind
	PID      uint32
	Data     []byte
	ExitCode int
	// Signal is the signal that ended the process, for ExecEventExited.
	Signal  int
	Failure *ExecFailure
}

// ExecHandle is a streamed command. Recv is for one goroutine at a time;
// Signal, Kill and Resize may run concurrently with a blocked Recv.
type ExecHandle struct {
	p   *host.Process
	err *ExecFailure // a spawn failure: the stream is Started-less

	mu       sync.Mutex
	started  bool
	done     bool
	stdin    *ExecSink
	stdinOK  bool
	stdinErr []*ExecFailure
}

// ExecStream starts cmd with args and returns its event stream. ctx
// bounds the start only. A command that cannot start gives a stream whose
// first event is ExecEventFailed. WithExecTimeout does not apply (as
// upstream).
func (s *Sandbox) ExecStream(ctx context.Context, cmd string, args []string, opts ...ExecOption) (*ExecHandle, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	c := execConfig(opts)
	ec := c.sandboxExec(append([]string{cmd}, args...))
	ec.Timeout = 0
	p, err := s.sb.ExecStream(ctx, ec)
	if err != nil {
		var se *guestagent.SpawnError
		if errors.As(err, &se) {
			return &ExecHandle{err: spawnFailure(se)}, nil
		}
		return nil, wrap(err)
	}
	h := &ExecHandle{p: p, stdinOK: c.StdinPipe || c.TTY}
	return h, nil
}

// ShellStream streams /bin/sh -c command.
func (s *Sandbox) ShellStream(ctx context.Context, command string, opts ...ExecOption) (*ExecHandle, error) {
	return s.ExecStream(ctx, "/bin/sh", []string{"-c", command}, opts...)
}

// ExecDefaultStream streams the default command (see ExecDefault).
func (s *Sandbox) ExecDefaultStream(ctx context.Context, opts ...ExecOption) (*ExecHandle, error) {
	argv, err := s.defaultCommand()
	if err != nil {
		return nil, err
	}
	return s.ExecStream(ctx, argv[0], argv[1:], opts...)
}

func spawnFailure(se *guestagent.SpawnError) *ExecFailure {
	f := &ExecFailure{Kind: string(se.Kind), Message: se.Message, Path: se.Path}
	if se.Errno != 0 {
		n := int(se.Errno)
		f.Errno = &n
		f.ErrnoName = errnoName(se.Errno)
	}
	if f.Message == "" {
		f.Message = se.Error()
	}
	return f
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EACCES:
		return "EACCES"
	case syscall.ENOEXEC:
		return "ENOEXEC"
	case syscall.ENOTDIR:
		return "ENOTDIR"
	case syscall.EPERM:
		return "EPERM"
	case syscall.ENOMEM:
		return "ENOMEM"
	}
	return "errno " + strconv.Itoa(int(e))
}

// ID returns the process's id in the guest, as a string.
func (h *ExecHandle) ID() (string, error) {
	if h.p == nil {
		return "", &Error{Kind: ErrExecFailed, Message: "exec did not start: " + h.err.Message}
	}
	return strconv.Itoa(h.p.PID()), nil
}

// Recv returns the next event: Started, then output, then Exited (or
// Failed alone), then Done forever.
func (h *ExecHandle) Recv(ctx context.Context) (*ExecEvent, error) {
	h.mu.Lock()
	if len(h.stdinErr) > 0 {
		f := h.stdinErr[0]
		h.stdinErr = h.stdinErr[1:]
		h.mu.Unlock()
		return &ExecEvent{Kind: ExecEventStdinError, Failure: f}, nil
	}
	if h.done {
		h.mu.Unlock()
		return &ExecEvent{Kind: ExecEventDone}, nil
	}
	if !h.started {
		h.started = true
		h.mu.Unlock()
		if h.p == nil {
			h.setDone()
			return &ExecEvent{Kind: ExecEventFailed, Failure: h.err}, nil
		}
		return &ExecEvent{Kind: ExecEventStarted, PID: uint32(h.p.PID())}, nil
	}
	h.mu.Unlock()
	ev, err := h.p.Recv(ctx)
	if err == io.EOF {
		h.setDone()
		return &ExecEvent{Kind: ExecEventDone}, nil
	}
	if err != nil {
		return nil, wrap(err)
	}
	switch ev.Kind {
	case host.EventStdout:
		return &ExecEvent{Kind: ExecEventStdout, Data: ev.Data}, nil
	case host.EventStderr:
		return &ExecEvent{Kind: ExecEventStderr, Data: ev.Data}, nil
	}
	return &ExecEvent{Kind: ExecEventExited, ExitCode: ev.Status.Code, Signal: int(ev.Status.Signal)}, nil
}

func (h *ExecHandle) setDone() {
	h.mu.Lock()
	h.done = true
	h.mu.Unlock()
}

// Events ranges over the events until Done (not included) or an error,
// which is yielded last.
func (h *ExecHandle) Events(ctx context.Context) iter.Seq2[*ExecEvent, error] {
	return func(yield func(*ExecEvent, error) bool) {
		for {
			ev, err := h.Recv(ctx)
			if err != nil {
				yield(nil, err)
				return
			}
			if ev.Kind == ExecEventDone || !yield(ev, nil) {
				return
			}
		}
	}
}

// Collect reads the stream to its end and returns the output. A process
// that never started is ErrExecFailed.
func (h *ExecHandle) Collect(ctx context.Context) (*ExecOutput, error) {
	out := &ExecOutput{code: -1}
	for ev, err := range h.Events(ctx) {
		if err != nil {
			return nil, err
		}
		switch ev.Kind {
		case ExecEventStdout:
			out.stdout = append(out.stdout, ev.Data...)
		case ExecEventStderr:
			out.stderr = append(out.stderr, ev.Data...)
		case ExecEventExited:
			out.code = ev.ExitCode
		case ExecEventFailed:
			return nil, &Error{Kind: ErrExecFailed, Message: "exec did not start: " + ev.Failure.Kind + ": " + ev.Failure.Message}
		}
	}
	return out, nil
}

// Wait discards the output and returns the exit code.
func (h *ExecHandle) Wait(ctx context.Context) (int, error) {
	out, err := h.Collect(ctx)
	if err != nil {
		return -1, err
	}
	return out.code, nil
}

// Signal sends signal to the process's group.
func (h *ExecHandle) Signal(ctx context.Context, signal int) error {
	if h.p == nil {
		return nil
	}
	return wrap(h.p.Signal(ctx, syscall.Signal(signal)))
}

// Kill sends SIGKILL to the process's group.
func (h *ExecHandle) Kill(ctx context.Context) error { return h.Signal(ctx, int(syscall.SIGKILL)) }

// Resize changes the terminal size (TTY only).
func (h *ExecHandle) Resize(ctx context.Context, rows, cols uint16) error {
	if h.p == nil {
		return nil
	}
	return wrap(h.p.Resize(ctx, rows, cols))
}

// TakeStdin returns the stdin sink, once; nil without WithExecStdinPipe or
// WithExecTTY, or on a second call.
func (h *ExecHandle) TakeStdin() *ExecSink {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stdinOK || h.p == nil || h.stdin != nil {
		return nil
	}
	h.stdin = &ExecSink{h: h}
	return h.stdin
}

// Close releases the stream without killing the process.
func (h *ExecHandle) Close() error {
	if h.p == nil {
		return nil
	}
	return wrap(h.p.Close())
}

// ExecSink is a streamed command's standard input.
type ExecSink struct {
	h *ExecHandle
}

// Write sends p; it blocks while the process does not read.
func (s *ExecSink) Write(p []byte) (int, error) { return s.WriteCtx(context.Background(), p) }

// WriteCtx is Write bounded by ctx. A failed write is also reported as an
// ExecEventStdinError.
func (s *ExecSink) WriteCtx(ctx context.Context, p []byte) (int, error) {
	n, err := s.h.p.WriteStdin(ctx, p)
	if err != nil {
		s.h.mu.Lock()
		s.h.stdinErr = append(s.h.stdinErr, &ExecFailure{Kind: "other", Message: err.Error()})
		s.h.mu.Unlock()
		return n, wrap(err)
	}
	return n, nil
}

// Close sends end of file (without a TTY; with one the terminal stays
// open).
func (s *ExecSink) Close() error { return wrap(s.h.p.CloseStdin(context.Background())) }
