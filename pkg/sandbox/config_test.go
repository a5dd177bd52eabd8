// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/oci"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		errs []string // substrings, one per reported problem
	}{
		{"ok", Config{Name: "a.b_c-1", Image: "busybox"}, nil},
		{"empty", Config{}, []string{"sandbox name is required", "image source is required"}},
		{"long name", Config{Name: strings.Repeat("a", 129), Image: "x"}, []string{"at most 128 characters: got 129"}},
		{"bad name", Config{Name: "-x", Image: "x"}, []string{"sandbox name \"-x\""}},
		{"everything", Config{Name: "x", Image: "x", MemoryMiB: 1, CPUs: 200,
			Env: map[string]string{"MSB_X": "1", "": "2", "A=B": "3"}, Workdir: "rel", Hostname: "bad_host"},
			[]string{"memory 1 MiB", "200 cpus", "MSB_ prefix", "env key is empty", "contains '='", "workdir \"rel\"", "hostname \"bad_host\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %v, want a problem containing %q", err, want)
				}
			}
		})
	}
}

func TestHostnameFor(t *testing.T) {
	long := strings.Repeat("n", 100)
	for _, tc := range []struct{ in, want string }{
		{"my-sandbox", "my-sandbox"},
		{"a_b", "a-b"},
		{"x.-y", "x.y"},
		{"___", "sandbox"},
	} {
		if got := HostnameFor(tc.in); got != tc.want {
			t.Errorf("HostnameFor(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := HostnameFor(long); len(got) != 63 || !strings.HasPrefix(got, strings.Repeat("n", 54)+"-") {
		t.Errorf("HostnameFor(100 bytes) = %q, want a 54-byte prefix, '-', 8 hex", got)
	}
}

func TestBootConfig(t *testing.T) {
	ic := oci.ImageConfig{Env: []string{"PATH=/bin", "A=image"}, WorkingDir: "/img", User: "nobody"}
	b := bootConfig(Config{Name: "x", Hostname: "h", Env: map[string]string{"A": "mine", "B": "2"}, Workdir: "/app"}, ic)
	if got, want := strings.Join(b.Env, " "), "PATH=/bin A=mine B=2"; got != want {
		t.Errorf("env = %q, want %q", got, want)
	}
	if b.Workdir != "/app" || b.User != "nobody" || b.Hostname != "h" {
		t.Errorf("boot config = %+v, want workdir /app, user nobody, hostname h", b)
	}
}

func TestDefaultRuntimeEnv(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"k", "a", "m"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	t.Setenv(EnvHome, filepath.Join(dir, "home"))
	t.Setenv(EnvKernel, filepath.Join(dir, "k"))
	t.Setenv(EnvAgent, filepath.Join(dir, "a"))
	t.Setenv(EnvBinary, filepath.Join(dir, "m"))
	rt := DefaultRuntime()
	if rt.Home != filepath.Join(dir, "home") || rt.Kernel != filepath.Join(dir, "k") || rt.Binary != filepath.Join(dir, "m") {
		t.Errorf("DefaultRuntime() = %+v", rt)
	}
	if err := rt.Check(); err != nil {
		t.Errorf("Check() = %v", err)
	}
	bad := Runtime{Home: dir, Kernel: filepath.Join(dir, "missing")}
	err := bad.Check()
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "agent not found") || !strings.Contains(err.Error(), "guest kernel") {
		t.Errorf("Check() = %v, want every missing file", err)
	}
}

func TestStateLifecycle(t *testing.T) {
	rt := Runtime{Home: t.TempDir()}
	if _, err := Get(rt, "none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	dir := rt.sandboxDir("s")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A record that says running with a process that is gone is crashed.
	if err := writeState(dir, &State{Name: "s", Status: StatusRunning, PID: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	st, err := Get(rt, "s")
	if err != nil || st.Status != StatusCrashed {
		t.Fatalf("Get = %+v, %v; want crashed", st, err)
	}
	fake := startFakeSandbox(t, dir)
	if err := writeState(dir, &State{Name: "s", Status: StatusRunning, PID: fake.Process.Pid}); err != nil {
		t.Fatal(err)
	}
	if err := Remove(rt, "s"); !errors.Is(err, ErrStillRunning) {
		t.Fatalf("Remove(running) = %v, want ErrStillRunning", err)
	}
	if _, err := updateState(dir, func(s *State) { s.Status = StatusStopped }); err != nil {
		t.Fatal(err)
	}
	if err := Remove(rt, "s"); err != nil {
		t.Fatalf("Remove(stopped) = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir left after Remove: %v", err)
	}
}

func TestCreateRejectsInvalid(t *testing.T) {
	_, err := Create(t.Context(), Runtime{Home: t.TempDir()}, Config{Name: "-"})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Create(invalid) = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{"sandbox name", "image source is required", "guest kernel not found"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Create(invalid) = %v, missing %q", err, want)
		}
	}
}
