// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

func TestWrapKinds(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want ErrorKind
	}{
		{fmt.Errorf("%w: x", sandbox.ErrInvalidConfig), ErrInvalidConfig},
		{fmt.Errorf("%w: x", sandbox.ErrNotFound), ErrSandboxNotFound},
		{fmt.Errorf("%w: x", sandbox.ErrAlreadyExists), ErrSandboxAlreadyExists},
		{fmt.Errorf("%w: x", sandbox.ErrStillRunning), ErrSandboxStillRunning},
		{fmt.Errorf("%w: x", sandbox.ErrNotRunning), ErrSandboxNotRunning},
		{fmt.Errorf("%w: x", sandbox.ErrSpawn), ErrExecFailed},
		{fmt.Errorf("wait: %w", context.Canceled), ErrCancelled},
		{errors.New("boom"), ErrInternal},
	} {
		err := wrap(tc.err)
		if !IsKind(err, tc.want) || !errors.Is(err, tc.want) {
			t.Errorf("wrap(%v) = %v (kind %v), want kind %v", tc.err, err, kindOf(err), tc.want)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("wrap(%v) lost its cause", tc.err)
		}
	}
	if wrap(nil) != nil {
		t.Error("wrap(nil) != nil")
	}
	if err := wrap(context.Canceled); !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("wrap(context.Canceled) = %q, want it to say context canceled", err)
	}
}

func kindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return -1
}

func TestCreateSandboxInvalid(t *testing.T) {
	t.Setenv("MSB_HOME", t.TempDir())
	_, err := CreateSandbox(t.Context(), strings.Repeat("x", 129), WithMemory(1), WithEnv(map[string]string{"MSB_A": "1"}))
	if !IsKind(err, ErrInvalidConfig) || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("CreateSandbox(invalid) = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{"sandbox name must be at most 128 characters: got 129", "image source is required", "memory 1 MiB", "MSB_"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CreateSandbox(invalid) = %v, missing %q", err, want)
		}
	}
	if _, err := GetSandbox(t.Context(), "nope"); !errors.Is(err, ErrSandboxNotFound) {
		t.Errorf("GetSandbox(missing) = %v, want ErrSandboxNotFound", err)
	}
}

func TestOptions(t *testing.T) {
	var c SandboxConfig
	for _, o := range []SandboxOption{
		WithImage("a"), WithImage("b"), WithMemory(256), WithCPUs(2),
		WithEnv(map[string]string{"A": "1", "B": "1"}), WithEnv(map[string]string{"B": "2"}),
		WithWorkdir("/w"), WithUser("nobody"), WithHostname("h"), WithDetached(),
	} {
		o(&c)
	}
	if c.Image != "b" || c.MemoryMiB != 256 || c.CPUs != 2 || c.Env["A"] != "1" || c.Env["B"] != "2" ||
		c.Workdir != "/w" || c.User != "nobody" || c.Hostname != "h" || !c.Detached {
		t.Errorf("options gave %+v", c)
	}
	var e ExecConfig
	WithExecTimeout(200 * 1e6)(&e) // 200ms rounds up to 1s, as upstream
	if e.Timeout.Seconds() != 1 {
		t.Errorf("WithExecTimeout(200ms) = %v, want 1s", e.Timeout)
	}
}

func TestExecOutputRawBytes(t *testing.T) {
	o := &ExecOutput{stdout: []byte("A\x00B\xff"), code: -1}
	if o.Stdout() != "A\x00B\xff" || len(o.StdoutBytes()) != 4 || o.Success() || o.ExitCode() != -1 {
		t.Errorf("ExecOutput accessors: %q %d %v", o.Stdout(), o.ExitCode(), o.Success())
	}
}

func TestNilExecOutput(t *testing.T) {
	var o *ExecOutput // what a failed Exec returns
	if o.Stdout() != "" || o.Stderr() != "" || o.StdoutBytes() != nil || o.StderrBytes() != nil || o.ExitCode() != -1 || o.Success() {
		t.Errorf("nil ExecOutput accessors: %q %q %d %v", o.Stdout(), o.Stderr(), o.ExitCode(), o.Success())
	}
}
