// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Status is a sandbox's lifecycle state.
type Status string

// Statuses.
const (
	StatusStarting Status = "starting"
	StatusRunning  Status = "running"
	// StatusDraining: RequestDrain was called; the sandbox starts no new
	// processes and stops once the running ones ended.
	StatusDraining Status = "draining"
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
	// GuestStatus is the byte the guest agent wrote when it powered the
	// VM off (bootcfg.Status: why it gave up), when it did.
	GuestStatus *uint8 `json:"guest_status,omitempty"`
	// Socket is the agent control socket.
	Socket string `json:"socket"`
	// ImageDigest is the manifest digest of the sandbox's image, which
	// the sandbox holds in the image store until it is removed.
	ImageDigest string `json:"image_digest,omitempty"`
	// Workdir and User are the exec defaults resolved at creation (the
	// configuration's, else the image's).
	Workdir string `json:"workdir,omitempty"`
	User    string `json:"user,omitempty"`
	// DefaultCommand is the entrypoint and cmd ExecDefault runs (the
	// configuration's, else the image's); empty when there is none.
	DefaultCommand []string `json:"default_command,omitempty"`
	// Killed records a requested kill, so that the end of the process is
	// seen as stopped rather than crashed.
	Killed bool `json:"killed,omitempty"`
	// ActivitySeq counts Touch calls.
	ActivitySeq uint64 `json:"activity_seq,omitempty"`
	Config      Config `json:"config"`
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

// alive reports whether pid is the sandbox process of the sandbox in dir:
// it exists, is not a zombie, and its command line names dir (so that a
// recycled pid is not mistaken for the sandbox).
func alive(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && err != syscall.EPERM {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return len(args) == 3 && args[1] == HiddenCommand && args[2] == dir
}

// Get returns the state of the sandbox name, seeing a sandbox whose process
// is gone while its record says it runs as crashed (and recording that).
func Get(rt Runtime, name string) (*State, error) {
	dir := rt.sandboxDir(name)
	st, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	if !st.Status.Terminal() && st.PID != 0 && !alive(st.PID, dir) {
		return updateState(dir, func(s *State) {
			switch {
			case s.Status.Terminal():
			case s.Killed:
				s.Status, s.Exit = StatusStopped, "killed"
			default:
				s.Status = StatusCrashed
				if s.Exit == "" {
					s.Exit = "sandbox process gone"
				}
			}
		})
	}
	return st, nil
}
