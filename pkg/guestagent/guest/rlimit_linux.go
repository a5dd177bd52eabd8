// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// rlimitResources maps upstream's resource names to RLIMIT_* numbers
// (include/uapi/asm-generic/resource.h).
var rlimitResources = map[string]int{
	"cpu":        unix.RLIMIT_CPU,
	"fsize":      unix.RLIMIT_FSIZE,
	"data":       unix.RLIMIT_DATA,
	"stack":      unix.RLIMIT_STACK,
	"core":       unix.RLIMIT_CORE,
	"rss":        unix.RLIMIT_RSS,
	"nproc":      unix.RLIMIT_NPROC,
	"nofile":     unix.RLIMIT_NOFILE,
	"memlock":    unix.RLIMIT_MEMLOCK,
	"as":         unix.RLIMIT_AS,
	"locks":      unix.RLIMIT_LOCKS,
	"sigpending": unix.RLIMIT_SIGPENDING,
	"msgqueue":   unix.RLIMIT_MSGQUEUE,
	"nice":       unix.RLIMIT_NICE,
	"rtprio":     unix.RLIMIT_RTPRIO,
	"rttime":     unix.RLIMIT_RTTIME,
}

type rlimit struct {
	resource int
	lim      unix.Rlimit
}

// parseRlimits checks host-supplied limits: known names, soft <= hard.
func parseRlimits(in []*agentpb.Rlimit) ([]rlimit, error) {
	var out []rlimit
	for _, r := range in {
		res, ok := rlimitResources[r.GetResource()]
		if !ok {
			return nil, &guestagent.SpawnError{Kind: guestagent.SpawnResourceLimit, Message: fmt.Sprintf("unknown rlimit resource %q", r.GetResource())}
		}
		if r.GetSoft() > r.GetHard() {
			return nil, &guestagent.SpawnError{Kind: guestagent.SpawnResourceLimit, Message: fmt.Sprintf("rlimit %s: soft %d above hard %d", r.GetResource(), r.GetSoft(), r.GetHard())}
		}
		out = append(out, rlimit{resource: res, lim: unix.Rlimit{Cur: r.GetSoft(), Max: r.GetHard()}})
	}
	return out, nil
}

// forkExec starts path. With limits, the child is started traced so that
// it stops right after execve, before running any instruction of the new
// program; the limits are set with prlimit and the child is detached. Go's
// ForkExec has no hook between fork and exec, and setting the limits on the
// agent itself around the fork would apply them to the agent.
func forkExec(path string, argv []string, attr *syscall.ProcAttr, limits []rlimit) (int, error) {
	if len(limits) == 0 {
		return syscall.ForkExec(path, argv, attr)
	}
	// ptrace requests must come from the tracing thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys := *attr.Sys
	sys.Ptrace = true
	a := *attr
	a.Sys = &sys
	pid, err := syscall.ForkExec(path, argv, &a)
	if err != nil {
		return 0, err
	}
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(pid, &ws, unix.WALL, nil)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil || !ws.Stopped() {
		if err == nil {
			err = fmt.Errorf("child did not stop after exec (status %#x)", uint32(ws))
		}
		_ = unix.Kill(pid, unix.SIGKILL)
		reap(pid)
		return 0, &guestagent.SpawnError{Kind: guestagent.SpawnResourceLimit, Path: path, Message: "trace child: " + err.Error()}
	}
	for _, l := range limits {
		lim := l.lim
		if err := unix.Prlimit(pid, l.resource, &lim, nil); err != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			_ = unix.PtraceDetach(pid)
			reap(pid)
			errno, _ := err.(syscall.Errno)
			return 0, &guestagent.SpawnError{Kind: guestagent.SpawnResourceLimit, Path: path, Errno: errno, Message: "prlimit: " + err.Error()}
		}
	}
	if err := unix.PtraceDetach(pid); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		reap(pid)
		return 0, &guestagent.SpawnError{Kind: guestagent.SpawnResourceLimit, Path: path, Message: "detach: " + err.Error()}
	}
	return pid, nil
}

// reap waits for pid to end and collects it.
func reap(pid int) unix.WaitStatus {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err != unix.EINTR {
			return ws
		}
	}
}
