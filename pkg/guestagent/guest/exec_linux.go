// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// proc is a started process: the leader of its own process group.
type proc struct {
	pid    int
	stdin  *os.File // write end, nil unless stdin is a pipe (tty: the master)
	stdout *os.File // read end (tty: the master)
	stderr *os.File // read end, nil with a tty
	tty    *os.File // the pty master, nil without a tty

	mu     sync.Mutex // guards reaped
	reaped bool
}

// signal sends sig to the process group unless the leader was reaped (its
// zombie pins the group id until then, so the id cannot be reused).
func (p *proc) signal(sig int) {
	if sig <= 0 || sig > 64 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		_ = unix.Kill(-p.pid, syscall.Signal(sig))
	}
}

func (p *proc) resize(rows, cols uint16) {
	if p.tty != nil {
		_ = setWinsize(p.tty, rows, cols)
	}
}

func spawnErr(kind guestagent.SpawnKind, path string, err error) error {
	se := &guestagent.SpawnError{Kind: kind, Path: path}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		se.Errno = errno
		se.Message = errno.Error()
	} else if err != nil {
		se.Message = err.Error()
	}
	return se
}

// mergeEnv overlays env on base; later KEY=VALUE entries replace earlier ones.
func mergeEnv(base, env []string) []string {
	idx := map[string]int{}
	var out []string
	for _, kv := range append(append([]string{}, base...), env...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func lookupEnv(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// lookPath finds name in the process's PATH (not the agent's).
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path, ok := lookupEnv(env, "PATH")
	if !ok {
		path = DefaultPath
	}
	denied := ""
	for dir := range strings.SplitSeq(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode()&0o111 != 0 {
			return p, nil
		}
		if denied == "" {
			denied = p
		}
	}
	if denied != "" {
		return "", spawnErr(guestagent.SpawnPermissionDenied, denied, syscall.EACCES)
	}
	return "", spawnErr(guestagent.SpawnNotFound, name, syscall.ENOENT)
}

// spawn starts the process req describes. Its input is host-controlled;
// every failure before the program runs is a *guestagent.SpawnError.
func (s *Server) spawn(req *agentpb.ExecRequest) (*proc, error) {
	argv := req.GetArgv()
	if len(argv) == 0 || argv[0] == "" {
		return nil, spawnErr(guestagent.SpawnBadArgs, "", errors.New("empty argv"))
	}
	for _, a := range append(append([]string{req.GetCwd(), req.GetUser()}, argv...), req.GetEnv()...) {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, spawnErr(guestagent.SpawnBadArgs, "", errors.New("NUL byte in argv, env, cwd or user"))
		}
	}
	env := mergeEnv(s.cfg.Env, req.GetEnv())
	var cred *syscall.Credential
	if req.GetUser() != "" {
		a, err := resolveUser(s.cfg.Root, req.GetUser())
		if err != nil {
			return nil, spawnErr(guestagent.SpawnUserSetupFailed, "", err)
		}
		cred = &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
		if _, ok := lookupEnv(env, "HOME"); !ok {
			env = append(env, "HOME="+a.home)
		}
	}
	cwd := req.GetCwd()
	if cwd == "" {
		cwd = "/"
	}
	if fi, err := os.Stat(cwd); err != nil {
		return nil, spawnErr(guestagent.SpawnBadCwd, cwd, err)
	} else if !fi.IsDir() {
		return nil, spawnErr(guestagent.SpawnBadCwd, cwd, syscall.ENOTDIR)
	}
	limits, err := parseRlimits(req.GetRlimits())
	if err != nil {
		return nil, err
	}
	path, err := lookPath(argv[0], env)
	if err != nil {
		return nil, err
	}

	p := &proc{}
	var childFiles []*os.File
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
	}()
	fail := func(err error) (*proc, error) {
		for _, f := range []*os.File{p.stdin, p.stdout, p.stderr} {
			if f != nil {
				f.Close()
			}
		}
		return nil, err
	}
	sys := &syscall.SysProcAttr{Credential: cred}
	if req.GetTty() {
		rows, cols := uint16(24), uint16(80)
		if r := req.GetRows(); r > 0 && r <= 0xffff {
			rows = uint16(r)
		}
		if c := req.GetCols(); c > 0 && c <= 0xffff {
			cols = uint16(c)
		}
		master, slave, err := openPTY(rows, cols)
		if err != nil {
			return nil, spawnErr(guestagent.SpawnPtySetupFailed, "", err)
		}
		p.tty, p.stdout, p.stdin = master, master, master
		childFiles = []*os.File{slave, slave, slave}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		var stdin *os.File
		if req.GetStdin() == agentpb.StdinMode_STDIN_PIPE {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, spawnErr(guestagent.SpawnResourceLimit, "", err)
			}
			stdin, p.stdin = r, w
		} else {
			stdin, err = os.Open(os.DevNull)
			if err != nil {
				return nil, spawnErr(guestagent.SpawnOther, os.DevNull, err)
			}
		}
		childFiles = append(childFiles, stdin)
		for _, dst := range []**os.File{&p.stdout, &p.stderr} {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(spawnErr(guestagent.SpawnResourceLimit, "", err))
			}
			*dst = r
			childFiles = append(childFiles, w)
		}
		sys.Setpgid = true
	}
	fds := make([]uintptr, len(childFiles))
	for i, f := range childFiles {
		fds[i] = f.Fd()
	}
	pid, err := forkExec(path, argv, &syscall.ProcAttr{Dir: cwd, Env: env, Files: fds, Sys: sys}, limits)
	if err != nil {
		var se *guestagent.SpawnError
		if errors.As(err, &se) {
			return fail(err)
		}
		kind := guestagent.SpawnOther
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
			kind = guestagent.SpawnNotFound
		case errors.Is(err, syscall.EACCES):
			kind = guestagent.SpawnPermissionDenied
		case errors.Is(err, syscall.ENOEXEC):
			kind = guestagent.SpawnNotExecutable
		case errors.Is(err, syscall.E2BIG), errors.Is(err, syscall.EINVAL):
			kind = guestagent.SpawnBadArgs
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.ENOMEM), errors.Is(err, syscall.EMFILE):
			kind = guestagent.SpawnResourceLimit
		case errors.Is(err, syscall.EPERM) && cred != nil:
			kind = guestagent.SpawnUserSetupFailed
		}
		return fail(spawnErr(kind, path, err))
	}
	p.pid = pid
	return p, nil
}

// waitExited blocks until the leader has exited, leaving it a zombie.
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// runExec runs one exec stream: spawn, Started, output pumps, stdin feeder,
// timeout, wait, drain, reap, Exit.
func (c *conn) runExec(st *stream, req *agentpb.ExecRequest) {
	if !c.srv.beginExec() {
		st.finish(nil, fmt.Errorf("%w: the sandbox is draining: no new processes", guestagent.ErrUnavailable))
		return
	}
	defer c.srv.endExec()
	p, err := c.srv.spawn(req)
	if err != nil {
		st.finish(nil, err)
		return
	}
	st.setController(p)
	// If the connection ends, the process is unobservable: kill its group.
	stopKill := context.AfterFunc(c.ctx, func() { p.signal(int(unix.SIGKILL)) })
	defer stopKill()

	_ = st.write(&agentpb.Frame{Msg: &agentpb.Frame_Started{Started: &agentpb.ExecStarted{Pid: uint32(p.pid)}}})

	var pumps, feeder sync.WaitGroup
	pumps.Go(func() { st.pump(agentpb.Channel_CHANNEL_STDOUT, ptyReader{p.stdout, p.tty != nil}) })
	if p.stderr != nil {
		pumps.Go(func() { st.pump(agentpb.Channel_CHANNEL_STDERR, p.stderr) })
	}
	feedCtx, stopFeed := context.WithCancel(c.ctx)
	defer stopFeed()
	if st.accept == agentpb.Channel_CHANNEL_STDIN {
		feeder.Go(func() { c.feedStdin(feedCtx, st, p) })
	}

	var timedOut atomic.Bool
	if ms := req.GetTimeoutMs(); ms > 0 {
		d := time.Duration(min(ms, uint64(1<<62)/uint64(time.Millisecond))) * time.Millisecond
		t := time.AfterFunc(d, func() {
			timedOut.Store(true)
			p.signal(int(unix.SIGKILL))
		})
		defer t.Stop()
	}

	waitExited(p.pid)
	// Output written before the exit is in the pipes; background children
	// may hold them open: read until EOF or the drain deadline.
	deadline := time.Now().Add(c.srv.cfg.DrainTimeout)
	_ = p.stdout.SetReadDeadline(deadline)
	if p.stderr != nil {
		_ = p.stderr.SetReadDeadline(deadline)
	}
	pumps.Wait()
	stopFeed()
	if p.stdin != nil {
		_ = p.stdin.SetWriteDeadline(time.Now())
	}
	feeder.Wait()

	p.mu.Lock()
	ws := reap(p.pid)
	p.reaped = true
	p.mu.Unlock()
	for _, f := range []*os.File{p.stdin, p.stdout, p.stderr} {
		if f != nil {
			f.Close()
		}
	}
	exit := &agentpb.ExecExit{Code: int32(ws.ExitStatus()), TimedOut: timedOut.Load()}
	if ws.Signaled() {
		exit.Code, exit.Signal = -1, int32(ws.Signal())
	}
	st.finish(&agentpb.Frame{Msg: &agentpb.Frame_Exit{Exit: exit}}, nil)
}

// feedStdin writes the host's stdin data to the process until CloseWrite
// (then closes the pipe) or a cancel. After a write error it keeps
// taking the host's data, so the host's writer is never stuck. ctx ends it
// once the process has exited and its output is drained.
func (c *conn) feedStdin(ctx context.Context, st *stream, p *proc) {
	broken := false
	for {
		b, err := st.readIn(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) && p.tty == nil {
				p.stdin.Close()
			}
			return
		}
		if !broken {
			if _, err := p.stdin.Write(b); err != nil {
				broken = true
			}
		}
		st.consumed(len(b))
	}
}

// ptyReader turns the EIO a pty master returns once the slave side is gone
// into EOF.
type ptyReader struct {
	f     *os.File
	isPTY bool
}

func (r ptyReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if err != nil && r.isPTY && errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = io.EOF
	}
	return n, err
}
