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

// processPoll is how often a handle that did not start the sandbox process
// (Open) checks whether it is still alive.
const processPoll = 50 * time.Millisecond

// Sandbox is a handle on a running sandbox: the one Create or Start
// returned (which owns the sandbox process unless detached), or one Open
// connected. Its methods are safe for concurrent use.
type Sandbox struct {
	rt      Runtime
	dir     string
	name    string
	workdir string // default exec directory
	user    string // default exec user
	pid     int
	cmd     *exec.Cmd     // nil for Open's handles
	done    chan struct{} // closed when the sandbox process ended
	waitErr error         // how it ended, set before done closes
	client  *host.Client

	// watchdog is the write end of the owner's watchdog pipe (attached
	// sandboxes this process started); closing it stops the sandbox.
	watchdog *os.File
	// quit ends the liveness poller of Open's handles.
	quit chan struct{}

	mu     sync.Mutex
	closed bool

	stopOnce sync.Once
	stopErr  error
}

// Name is the sandbox's name.
func (sb *Sandbox) Name() string { return sb.name }

// Dir is the sandbox's state directory.
func (sb *Sandbox) Dir() string { return sb.dir }

// PID is the sandbox process's id.
func (sb *Sandbox) PID() int { return sb.pid }

// Done is closed once the sandbox process has exited.
func (sb *Sandbox) Done() <-chan struct{} { return sb.done }

// State reads the sandbox's persisted state.
func (sb *Sandbox) State() (*State, error) { return Get(sb.rt, sb.name) }

// OwnsLifecycle reports whether closing this handle stops the sandbox: it
// started the sandbox attached and has not detached.
func (sb *Sandbox) OwnsLifecycle() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.watchdog != nil
}

// Agent returns the connection to the guest agent, for the operations
// this package does not wrap (file system, streaming exec). It fails with
// ErrClosed after Close and ErrNotRunning once the sandbox ended.
func (sb *Sandbox) Agent() (*host.Client, error) {
	sb.mu.Lock()
	closed := sb.closed
	sb.mu.Unlock()
	switch {
	case closed || sb.client == nil:
		return nil, fmt.Errorf("%w: %s", ErrClosed, sb.name)
	case isDone(sb.done):
		return nil, fmt.Errorf("%w: %s", ErrNotRunning, sb.name)
	}
	markActivity(sb.dir)
	return sb.client, nil
}

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
	// Stdin is sent as standard input; nil means /dev/null (unless
	// StdinPipe).
	Stdin []byte
	// StdinPipe gives a streamed command a pipe for standard input
	// (host.Process.Stdin).
	StdinPipe bool
	// TTY runs the command on a pseudo-terminal of Rows×Cols (zero:
	// 24×80); stderr is merged into stdout.
	TTY        bool
	Rows, Cols uint16
	// Rlimits are applied to the command before it starts.
	Rlimits []host.Rlimit
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

// hostExec converts cfg, applying the sandbox's defaults, and returns the
// agent connection to run it on.
func (sb *Sandbox) hostExec(cfg ExecConfig) (host.ExecConfig, *host.Client, error) {
	if len(cfg.Argv) == 0 {
		return host.ExecConfig{}, nil, fmt.Errorf("%w: exec: empty command", ErrInvalidConfig)
	}
	hc := host.ExecConfig{
		Argv: cfg.Argv, Env: cfg.Env, Dir: cfg.Dir, User: cfg.User, Timeout: cfg.Timeout,
		TTY: cfg.TTY, Rows: cfg.Rows, Cols: cfg.Cols, Rlimits: cfg.Rlimits,
	}
	if hc.Dir == "" {
		hc.Dir = sb.workdir
	}
	if hc.User == "" {
		hc.User = sb.user
	}
	switch {
	case cfg.StdinPipe:
		hc.Stdin = host.StdinPipe
	case cfg.Stdin != nil:
		hc.Stdin, hc.StdinData = host.StdinBytes, cfg.Stdin
	}
	c, err := sb.Agent()
	return hc, c, err
}

// Exec runs a command in the sandbox and collects its output. A non-zero
// exit is a result, not an error; a command that cannot start is an error
// matching ErrSpawn.
func (sb *Sandbox) Exec(ctx context.Context, cfg ExecConfig) (*Output, error) {
	hc, c, err := sb.hostExec(cfg)
	if err != nil {
		return nil, err
	}
	out, err := c.Run(ctx, hc)
	if err != nil {
		return nil, sb.agentErr(err)
	}
	return &Output{
		Stdout: out.Stdout, Stderr: out.Stderr, Code: out.Status.Code,
		Signal: int(out.Status.Signal), TimedOut: out.Status.TimedOut,
	}, nil
}

// ExecStream starts a command and returns it for streaming: events,
// stdin, signals, resize. ctx bounds the start only.
func (sb *Sandbox) ExecStream(ctx context.Context, cfg ExecConfig) (*host.Process, error) {
	hc, c, err := sb.hostExec(cfg)
	if err != nil {
		return nil, err
	}
	p, err := c.Exec(ctx, hc)
	if err != nil {
		return nil, sb.agentErr(err)
	}
	return p, nil
}

// processEnd says how the sandbox process ended: its exit status, and the
// exit its state records (a crashed machine, say). Call it after done.
func (sb *Sandbox) processEnd() string {
	what := "exit status 0"
	if sb.waitErr != nil {
		what = sb.waitErr.Error()
	}
	if st, err := ReadState(sb.dir); err == nil && st.Exit != "" {
		what += "; " + st.Exit
	}
	return what
}

// agentErr classifies an error of an agent call: a spawn failure, or a
// lost connection because the sandbox ended.
func (sb *Sandbox) agentErr(err error) error {
	if errors.Is(err, guestagent.ErrSpawn) {
		return fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	if sb.client != nil && isDone(sb.client.Done()) {
		// A lost connection: the sandbox process may just be ending;
		// give its reaping a moment to tell.
		t := time.NewTimer(deathWait)
		defer t.Stop()
		select {
		case <-sb.done:
			if sb.cmd != nil {
				// This process started the sandbox: say how it ended.
				return fmt.Errorf("%w: %s (sandbox process: %v): %w", ErrNotRunning, sb.name, sb.processEnd(), err)
			}
			return fmt.Errorf("%w: %s: %w", ErrNotRunning, sb.name, err)
		case <-t.C:
		}
	}
	return err
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
	gone := isDone(sb.done)
	if sb.client != nil {
		if !gone {
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
	sb.release()
	_, err := updateState(sb.dir, func(s *State) {
		if !s.Status.Terminal() {
			s.Status, s.Exit = status, what
		}
	})
	return errors.Join(waitErr, err, sb.afterStop())
}

// Kill ends the sandbox at once: a hard stop (the VM is torn down without a
// guest shutdown, so unsynced guest writes are lost), SIGKILL if that takes
// too long, and waits up to timeout (zero: DefaultKillTimeout) for the
// process to go.
func (sb *Sandbox) Kill(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultKillTimeout
	}
	if sb.client != nil {
		sb.client.Close()
	}
	if !isDone(sb.done) {
		if _, err := updateState(sb.dir, func(s *State) { s.Killed = true }); err != nil {
			return err
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		sb.kill()
	}()
	select {
	case <-killed:
	case <-t.C:
		return fmt.Errorf("%w: %s: sandbox process %d still there %v after SIGKILL", ErrStillRunning, sb.name, sb.pid, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	sb.release()
	_, err := updateState(sb.dir, func(s *State) {
		if !s.Status.Terminal() {
			s.Status, s.Exit = StatusStopped, "killed"
		}
	})
	return errors.Join(err, sb.afterStop())
}

// afterStop removes an ephemeral sandbox once it ended.
func (sb *Sandbox) afterStop() error {
	st, err := ReadState(sb.dir)
	if err != nil || !st.Config.Ephemeral {
		return nil
	}
	return Remove(sb.rt, sb.name)
}

// kill hard-stops the sandbox process (SIGINT), escalates to SIGKILL
// after hardStopGrace, and waits for it to end. For a process this handle
// did not start, done closes within processPoll of its end.
func (sb *Sandbox) kill() {
	if isDone(sb.done) {
		return
	}
	syscall.Kill(sb.pid, syscall.SIGINT)
	t := time.NewTimer(hardStopGrace)
	defer t.Stop()
	select {
	case <-sb.done:
		return
	case <-t.C:
	}
	syscall.Kill(sb.pid, syscall.SIGKILL)
	<-sb.done
}

// Detach lets the sandbox outlive this handle and this process: closing
// the handle no longer stops it.
func (sb *Sandbox) Detach() error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.closed {
		return fmt.Errorf("%w: %s", ErrClosed, sb.name)
	}
	if sb.watchdog == nil {
		return nil
	}
	_, err := sb.watchdog.Write([]byte{detachByte})
	sb.watchdog.Close()
	sb.watchdog = nil
	if err != nil {
		return fmt.Errorf("sandbox: detach %s: %w", sb.name, err)
	}
	return nil
}

// Close releases the handle. An attached sandbox this handle owns then
// stops (gracefully, in the background: WaitUntilStopped observes it); a
// detached or connected one keeps running. A second Close is ErrClosed.
func (sb *Sandbox) Close() error {
	sb.mu.Lock()
	if sb.closed {
		sb.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrClosed, sb.name)
	}
	sb.closed = true
	sb.mu.Unlock()
	if sb.client != nil {
		sb.client.Close()
	}
	sb.release()
	return nil
}

// release closes the watchdog pipe and ends the liveness poller.
func (sb *Sandbox) release() {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.watchdog != nil {
		sb.watchdog.Close()
		sb.watchdog = nil
	}
	if sb.quit != nil {
		close(sb.quit)
		sb.quit = nil
	}
}

// Open connects to the running sandbox name. The handle does not own the
// sandbox: closing it leaves the sandbox running. A stopped sandbox is
// ErrNotRunning.
func Open(ctx context.Context, rt Runtime, name string) (*Sandbox, error) {
	rt.abs()
	if !validName(name) {
		return nil, fmt.Errorf("%w: sandbox name %q", ErrInvalidConfig, name)
	}
	st, err := Get(rt, name)
	if err != nil {
		return nil, err
	}
	if st.Status != StatusRunning && st.Status != StatusDraining {
		return nil, fmt.Errorf("%w: %s is %s", ErrNotRunning, name, st.Status)
	}
	c, err := DialAgent(ctx, st.Socket)
	if err != nil {
		if !alive(st.PID, rt.sandboxDir(name)) {
			return nil, fmt.Errorf("%w: %s: %w", ErrNotRunning, name, err)
		}
		return nil, err
	}
	sb := &Sandbox{
		rt: rt, dir: rt.sandboxDir(name), name: name, pid: st.PID,
		workdir: st.Workdir, user: st.User,
		done: make(chan struct{}), quit: make(chan struct{}), client: c,
	}
	go sb.pollAlive(sb.quit)
	return sb, nil
}

// pollAlive closes done when the sandbox process (not our child) is gone,
// or returns when quit closes.
func (sb *Sandbox) pollAlive(quit <-chan struct{}) {
	t := time.NewTicker(processPoll)
	defer t.Stop()
	for {
		if !alive(sb.pid, sb.dir) {
			sb.waitErr = errors.New("sandbox process exited")
			close(sb.done)
			return
		}
		select {
		case <-quit:
			return
		case <-t.C:
		}
	}
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
	releaseImage(rt, st)
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
