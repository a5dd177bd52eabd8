// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// AttachOption configures AttachWith, AttachDefault and AttachShell.
type AttachOption func(*attachOptions)

type attachOptions struct {
	cwd, user  string
	env        map[string]string
	detachKeys string
}

// WithAttachCwd sets the working directory.
func WithAttachCwd(path string) AttachOption { return func(o *attachOptions) { o.cwd = path } }

// WithAttachUser runs the command as user.
func WithAttachUser(user string) AttachOption { return func(o *attachOptions) { o.user = user } }

// WithAttachEnv overlays env (repeated calls merge).
func WithAttachEnv(env map[string]string) AttachOption {
	return func(o *attachOptions) {
		if o.env == nil {
			o.env = map[string]string{}
		}
		for k, v := range env {
			o.env[k] = v
		}
	}
}

// WithAttachDetachKeys sets the key sequence that detaches (Docker syntax:
// "ctrl-]", the default, "ctrl-p,ctrl-q", "q").
func WithAttachDetachKeys(keys string) AttachOption {
	return func(o *attachOptions) { o.detachKeys = keys }
}

// Attach runs cmd on a pseudo-terminal connected to this process's
// terminal (raw mode, resized with it) and returns its exit code. Standard
// input must be a terminal.
func (s *Sandbox) Attach(ctx context.Context, cmd string, args ...string) (int, error) {
	return s.AttachWith(ctx, cmd, args)
}

// AttachShell attaches the sandbox's shell (WithShell; default /bin/sh).
func (s *Sandbox) AttachShell(ctx context.Context, opts ...AttachOption) (int, error) {
	shell := "/bin/sh"
	if st, err := s.sb.State(); err == nil && st.Config.Shell != "" {
		shell = st.Config.Shell
	}
	return s.AttachWith(ctx, shell, nil, opts...)
}

// AttachDefault attaches the default command (see ExecDefault).
func (s *Sandbox) AttachDefault(ctx context.Context, opts ...AttachOption) (int, error) {
	argv, err := s.defaultCommand()
	if err != nil {
		return -1, err
	}
	return s.AttachWith(ctx, argv[0], argv[1:], opts...)
}

// AttachWith is Attach with options. The detach keys end the attachment
// and leave the command running (the result is then -1 and a nil error).
func (s *Sandbox) AttachWith(ctx context.Context, cmd string, args []string, opts ...AttachOption) (int, error) {
	o := attachOptions{detachKeys: "ctrl-]"}
	for _, f := range opts {
		f(&o)
	}
	detach, err := parseDetachKeys(o.detachKeys)
	if err != nil {
		return -1, err
	}
	const stdin = 0
	ws, err := unix.IoctlGetWinsize(stdin, unix.TIOCGWINSZ)
	if err != nil {
		return -1, &Error{Kind: ErrInvalidArgument, Message: "attach: standard input is not a terminal"}
	}
	restore, err := makeRaw(stdin)
	if err != nil {
		return -1, &Error{Kind: ErrIO, Message: "attach: " + err.Error(), Cause: err}
	}
	defer restore()

	h, err := s.ExecStream(ctx, cmd, args, WithExecTTY(true), WithExecCwd(o.cwd), WithExecUser(o.user), WithExecEnv(o.env))
	if err != nil {
		return -1, err
	}
	defer h.Close()
	if err := h.Resize(ctx, ws.Row, ws.Col); err != nil {
		return -1, err
	}
	// Resize with the terminal.
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	stopWinch := make(chan struct{})
	defer close(stopWinch)
	go func() {
		for {
			select {
			case <-winch:
				if ws, err := unix.IoctlGetWinsize(stdin, unix.TIOCGWINSZ); err == nil {
					h.Resize(context.Background(), ws.Row, ws.Col)
				}
			case <-stopWinch:
				return
			}
		}
	}()

	in, err := pollableStdin()
	if err != nil {
		return -1, &Error{Kind: ErrIO, Message: "attach: " + err.Error(), Cause: err}
	}
	detached := make(chan struct{})
	inDone := make(chan struct{})
	inCtx, inCancel := context.WithCancel(context.Background())
	defer func() {
		// Unblock the reader (a read or a write to a full guest window),
		// then join it.
		inCancel()
		in.SetReadDeadline(time.Now())
		<-inDone
		in.Close()
		unix.SetNonblock(stdin, false) // the flag is shared with fd 0's file
	}()
	sink := h.TakeStdin()
	go func() {
		defer close(inDone)
		buf := make([]byte, 4096)
		matched := 0
		for {
			n, err := in.Read(buf)
			for i := 0; i < n; i++ {
				if buf[i] == detach[matched] {
					matched++
					if matched == len(detach) {
						close(detached)
						return
					}
					continue
				}
				matched = 0
			}
			if n > 0 {
				if _, werr := sink.WriteCtx(inCtx, buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()

	events := make(chan *ExecEvent)
	recvErr := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			ev, err := h.Recv(rctx)
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case events <- ev:
			case <-rctx.Done():
				recvErr <- rctx.Err()
				return
			}
			if ev.Kind == ExecEventDone {
				return
			}
		}
	}()
	code := -1
	for {
		select {
		case ev := <-events:
			switch ev.Kind {
			case ExecEventStdout, ExecEventStderr:
				os.Stdout.Write(ev.Data)
			case ExecEventExited:
				code = ev.ExitCode
			case ExecEventFailed:
				return -1, &Error{Kind: ErrExecFailed, Message: "attach: " + ev.Failure.Kind + ": " + ev.Failure.Message}
			case ExecEventDone:
				return code, nil
			}
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) && ctx.Err() == nil {
				return code, nil
			}
			return -1, wrap(err)
		case <-detached:
			cancel()
			return -1, nil
		}
	}
}

// parseDetachKeys parses Docker's detach key syntax: comma-separated
// single characters or ctrl-X.
func parseDetachKeys(s string) ([]byte, error) {
	var out []byte
	for _, k := range strings.Split(s, ",") {
		switch {
		case len(k) == 1:
			out = append(out, k[0])
		case strings.HasPrefix(k, "ctrl-") && len(k) == 6:
			c := k[5]
			switch {
			case c >= 'a' && c <= 'z':
				out = append(out, c-'a'+1)
			case c >= '@' && c <= '_':
				out = append(out, c-'@')
			default:
				return nil, &Error{Kind: ErrInvalidArgument, Message: fmt.Sprintf("detach keys %q: bad key %q", s, k)}
			}
		default:
			return nil, &Error{Kind: ErrInvalidArgument, Message: fmt.Sprintf("detach keys %q: bad key %q (want a character or ctrl-X)", s, k)}
		}
	}
	return out, nil
}

// makeRaw puts the terminal fd in raw mode and returns the restore
// function.
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	t := *old
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// pollableStdin returns a duplicate of standard input in non-blocking mode,
// so that its reads go through the runtime poller and a read deadline can
// end them.
func pollableStdin() (*os.File, error) {
	fd, err := unix.Dup(0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "stdin"), nil
}
