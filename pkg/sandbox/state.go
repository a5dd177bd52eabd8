// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Status is a sandbox's lifecycle state.
type Status string

// Statuses.
const (
	StatusStarting Status = "starting"
	StatusRunning  Status = "running"
	StatusStopped  Status = "stopped"
	StatusCrashed  Status = "crashed"
)

// Terminal reports stopped and crashed.
func (s Status) Terminal() bool { return s == StatusStopped || s == StatusCrashed }

// State is the persisted record of a sandbox (state.json).
type State struct {
	Name    string    `json:"name"`
	Status  Status    `json:"status"`
	PID     int       `json:"pid,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Exit says how the VM ended, once it did.
	Exit string `json:"exit,omitempty"`
	// Socket is the agent control socket.
	Socket string `json:"socket"`
	Config Config `json:"config"`
}

// lockState takes the sandbox directory's state lock (flock, exclusive)
// and returns the function that releases it.
func lockState(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, stateLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sandbox: state lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox: state lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// ReadState reads the state of the sandbox in dir. A missing sandbox is
// ErrNotFound.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, filepath.Base(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: read state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("sandbox: read state %s: %w", dir, err)
	}
	return &st, nil
}

// writeState replaces state.json atomically (temporary file, fsync,
// rename). The caller holds the state lock.
func writeState(dir string, st *State) error {
	st.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("sandbox: write state: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'))
}

func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("sandbox: write %s: %w", filepath.Base(path), err)
	}
	_, err = f.Write(b)
	if err = errors.Join(err, f.Sync(), f.Close()); err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("sandbox: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// updateState applies fn to the state of the sandbox in dir under the
// state lock and writes the result.
func updateState(dir string, fn func(*State)) (*State, error) {
	unlock, err := lockState(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	fn(st)
	if err := writeState(dir, st); err != nil {
		return nil, err
	}
	return st, nil
}

// alive reports whether a process pid exists (and is not a zombie we
// could tell apart: the caller reaps its own children).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// Get returns the state of the sandbox name, seeing a sandbox whose process
// is gone while its record says it runs as crashed (and recording that).
func Get(rt Runtime, name string) (*State, error) {
	dir := rt.sandboxDir(name)
	st, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	if !st.Status.Terminal() && st.PID != 0 && !alive(st.PID) {
		return updateState(dir, func(s *State) {
			if !s.Status.Terminal() {
				s.Status = StatusCrashed
				if s.Exit == "" {
					s.Exit = "sandbox process gone"
				}
			}
		})
	}
	return st, nil
}
