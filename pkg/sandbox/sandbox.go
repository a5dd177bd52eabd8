// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

// Sandbox is a running sandbox this process created. Its methods are safe
// for concurrent use.
type Sandbox struct {
	rt      Runtime
	dir     string
	name    string
	workdir string // default exec directory
	user    string // default exec user
	cmd     *exec.Cmd
	done    chan struct{} // closed when the sandbox process was reaped
	waitErr error         // cmd.Wait's result, set before done closes
	client  *host.Client

	stopOnce sync.Once
	stopErr  error
}

// Name is the sandbox's name.
func (sb *Sandbox) Name() string { return sb.name }

// Dir is the sandbox's state directory.
func (sb *Sandbox) Dir() string { return sb.dir }

// PID is the sandbox process's id.
func (sb *Sandbox) PID() int { return sb.cmd.Process.Pid }

// Done is closed once the sandbox process has exited.
func (sb *Sandbox) Done() <-chan struct{} { return sb.done }

// State reads the sandbox's persisted state.
func (sb *Sandbox) State() (*State, error) { return Get(sb.rt, sb.name) }

// ExecConfig is one command run in the sandbox.
type ExecConfig struct {
	// Argv is the program and its arguments. Required.
	Argv []string
	// Env (KEY=VALUE) overlays the sandbox's environment.
	Env []string
	// Dir is the working directory; "" means the sandbox's workdir.
	Dir string
	// User runs the command as this user; "" means the sandbox's user.
	User string
	// Stdin is sent as standard input; nil means /dev/null.
	Stdin []byte
	// Timeout, if positive, kills the command at the deadline.
	Timeout time.Duration
}

// Output is a finished command's collected output. Stdout and Stderr are
// the raw bytes.
type Output struct {
	Stdout, Stderr []byte
	// Code is the exit code, or -1 when a signal ended the process.
	Code int
	// Signal is the signal that ended it, or 0.
	Signal int
	// TimedOut reports a kill at ExecConfig.Timeout.
	TimedOut bool
}

// Exec runs a command in the sandbox and collects its output. A non-zero
// exit is a result, not an error; a command that cannot start is an error
// matching ErrSpawn.
func (sb *Sandbox) Exec(ctx context.Context, cfg ExecConfig) (*Output, error) {
	if len(cfg.Argv) == 0 {
		return nil, fmt.Errorf("%w: exec: empty command", ErrInvalidConfig)
	}
	select {
	case <-sb.done:
		return nil, fmt.Errorf("%w: %s", ErrNotRunning, sb.name)
	default:
	}
	if sb.client == nil {
		return nil, ErrClosed
	}
	hc := host.ExecConfig{Argv: cfg.Argv, Env: cfg.Env, Dir: cfg.Dir, User: cfg.User, Timeout: cfg.Timeout}
	if hc.Dir == "" {
		hc.Dir = sb.workdir
	}
	if hc.User == "" {
		hc.User = sb.user
	}
	if cfg.Stdin != nil {
		hc.Stdin, hc.StdinData = host.StdinBytes, cfg.Stdin
	}
	out, err := sb.client.Run(ctx, hc)
	if err != nil {
		if errors.Is(err, guestagent.ErrSpawn) {
			return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
		}
		if isDone(sb.client.Done()) {
			// A lost connection: the sandbox process may just be ending;
			// give its reaping a moment to tell.
			t := time.NewTimer(deathWait)
			defer t.Stop()
			select {
			case <-sb.done:
				return nil, fmt.Errorf("%w: %s: %w", ErrNotRunning, sb.name, err)
			case <-t.C:
			}
		}
		return nil, err
	}
	return &Output{
		Stdout: out.Stdout, Stderr: out.Stderr, Code: out.Status.Code,
		Signal: int(out.Status.Signal), TimedOut: out.Status.TimedOut,
	}, nil
}

// Stop shuts the sandbox down: it asks the guest to power off, waits up to
// timeout (zero means DefaultStopTimeout) for the sandbox process to exit,
// then kills it. The state ends stopped (or crashed, if the VM had
// crashed). ctx bounds the wait; when it ends first the process is killed.
// Later calls return the first call's result.
func (sb *Sandbox) Stop(ctx context.Context, timeout time.Duration) error {
	sb.stopOnce.Do(func() { sb.stopErr = sb.stop(ctx, timeout) })
	return sb.stopErr
}

func (sb *Sandbox) stop(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	gone := false
	select {
	case <-sb.done:
		gone = true
	default:
	}
	if sb.client != nil {
		select {
		case <-sb.done:
		default:
			// The agent stops processes, syncs, unmounts and powers off;
			// an error here (a dead agent) leaves it to the grace period.
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			sb.client.Shutdown(rctx, false)
			cancel()
		}
		sb.client.Close()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	var waitErr error
	status, what := StatusStopped, "sandbox process ended without recording the VM's end"
	select {
	case <-sb.done:
		if gone {
			status, what = StatusCrashed, fmt.Sprintf("sandbox process gone (%v)", sb.waitErr)
		}
	case <-t.C:
		sb.kill()
		what = "killed after the stop grace period"
	case <-ctx.Done():
		sb.kill()
		what = "killed: " + ctx.Err().Error()
		waitErr = ctx.Err()
	}
	_, err := updateState(sb.dir, func(s *State) {
		if !s.Status.Terminal() {
			s.Status, s.Exit = status, what
		}
	})
	return errors.Join(waitErr, err)
}

// kill ends the sandbox process with SIGKILL and waits for it.
func (sb *Sandbox) kill() {
	if sb.cmd == nil || sb.cmd.Process == nil {
		return
	}
	sb.cmd.Process.Signal(syscall.SIGKILL)
	<-sb.done
}

// Remove deletes a stopped or crashed sandbox's directory. A running one is
// an error matching ErrStillRunning.
func Remove(rt Runtime, name string) error {
	rt.abs()
	if !validName(name) {
		return fmt.Errorf("%w: sandbox name %q", ErrInvalidConfig, name)
	}
	st, err := Get(rt, name)
	if err != nil {
		return err
	}
	if !st.Status.Terminal() {
		return fmt.Errorf("%w: %s is %s", ErrStillRunning, name, st.Status)
	}
	return os.RemoveAll(rt.sandboxDir(name))
}

// DialAgent connects to the agent of a sandbox through its socket (the
// hybrid vsock protocol: "CONNECT <port>\n", answered "OK <port>\n") and
// completes the agent handshake. ctx bounds both.
func DialAgent(ctx context.Context, sock string) (*host.Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("sandbox: dial agent: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", bootcfg.AgentPort); err != nil {
		conn.Close()
		return nil, fmt.Errorf("sandbox: dial agent: %w", err)
	}
	// One byte at a time: nothing after the newline may be consumed.
	var line []byte
	buf := make([]byte, 1)
	for len(line) < 64 {
		if _, err := conn.Read(buf); err != nil {
			conn.Close()
			return nil, fmt.Errorf("sandbox: dial agent: %w", err)
		}
		if buf[0] == '\n' {
			break
		}
		line = append(line, buf[0])
	}
	if !strings.HasPrefix(string(line), "OK ") {
		conn.Close()
		return nil, fmt.Errorf("sandbox: dial agent: proxy answered %q", line)
	}
	conn.SetDeadline(time.Time{})
	c, err := host.Dial(ctx, conn, host.Config{Agent: "microsandbox-go"})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("sandbox: agent handshake: %w", err)
	}
	return c, nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
