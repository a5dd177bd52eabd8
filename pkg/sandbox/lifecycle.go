// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// RequestStop asks the sandbox name to stop gracefully (SIGTERM to its
// process: the guest is asked to power off, and ended after the grace
// period) and returns without waiting. A sandbox that is not running is
// ErrNotRunning.
func RequestStop(rt Runtime, name string) error {
	return signalSandbox(rt, name, syscall.SIGTERM)
}

// RequestKill hard-stops the sandbox name (its VM ends at once, without a
// guest shutdown; the sandbox process exits within hardStopGrace) and
// returns without waiting; the sandbox is then recorded as stopped.
func RequestKill(rt Runtime, name string) error {
	return signalSandbox(rt, name, syscall.SIGINT)
}

func signalSandbox(rt Runtime, name string, sig syscall.Signal) error {
	rt.abs()
	if !validName(name) {
		return fmt.Errorf("%w: sandbox name %q", ErrInvalidConfig, name)
	}
	dir := rt.sandboxDir(name)
	st, err := Get(rt, name)
	if err != nil {
		return err
	}
	if st.Status.Terminal() || !alive(st.PID, dir) {
		return fmt.Errorf("%w: %s is %s", ErrNotRunning, name, st.Status)
	}
	if sig == syscall.SIGINT {
		if _, err := updateState(dir, func(s *State) { s.Killed = true }); err != nil {
			return err
		}
	}
	if err := syscall.Kill(st.PID, sig); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("sandbox: signal %s: %w", name, err)
	}
	return nil
}

// RequestDrain asks the sandbox name to drain: it starts no new processes
// and stops once the running ones ended. It returns without waiting; the
// status is draining until then.
func RequestDrain(rt Runtime, name string) error {
	return signalSandbox(rt, name, syscall.SIGUSR1)
}

// WaitStopped waits until the sandbox name is stopped or crashed and
// returns its final state. ctx bounds the wait.
func WaitStopped(ctx context.Context, rt Runtime, name string) (*State, error) {
	rt.abs()
	t := time.NewTicker(processPoll)
	defer t.Stop()
	for {
		st, err := Get(rt, name)
		if err != nil {
			return nil, err
		}
		if st.Status.Terminal() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Touch records activity on the running sandbox name (resetting its idle
// timer) and returns the new activity sequence number, which grows by one
// per Touch.
func Touch(rt Runtime, name string) (uint64, error) {
	rt.abs()
	if !validName(name) {
		return 0, fmt.Errorf("%w: sandbox name %q", ErrInvalidConfig, name)
	}
	dir := rt.sandboxDir(name)
	st, err := Get(rt, name)
	if err != nil {
		return 0, err
	}
	if st.Status != StatusRunning && st.Status != StatusDraining {
		return 0, fmt.Errorf("%w: %s is %s", ErrNotRunning, name, st.Status)
	}
	st, err = updateState(dir, func(s *State) { s.ActivitySeq++ })
	if err != nil {
		return 0, err
	}
	markActivity(dir)
	return st.ActivitySeq, nil
}

// markActivity sets the activity file's time to now (creating it).
func markActivity(dir string) {
	p := filepath.Join(dir, activityFile)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600); err == nil {
			f.Close()
		}
	}
}
