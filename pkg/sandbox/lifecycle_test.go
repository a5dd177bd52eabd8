// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/oci"
)

func TestWatchOwner(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"", false},
		{"x", false},
		{"D", true},
		{"xxD", true},
	} {
		if got := watchOwner(strings.NewReader(tt.in)); got != tt.want {
			t.Errorf("watchOwner(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// fakeSandboxEnv makes the test binary stand in for a sandbox process
// (see TestMain): it sleeps, with "__sandbox DIR" on its command line.
const fakeSandboxEnv = "MSB_TEST_FAKE_SANDBOX_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(fakeSandboxEnv) == "1" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startFakeSandbox starts a process that alive takes for the sandbox
// process of dir; it is killed when the test ends.
func startFakeSandbox(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, HiddenCommand, dir)
	cmd.Env = append(os.Environ(), fakeSandboxEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// TestAlive checks that alive accepts only the sandbox process of the
// given directory: not another process (a recycled pid), not one that
// ended.
func TestAlive(t *testing.T) {
	dir := t.TempDir()
	cmd := startFakeSandbox(t, dir)
	if !alive(cmd.Process.Pid, dir) {
		t.Error("alive(fake sandbox process) = false")
	}
	if alive(cmd.Process.Pid, dir+"x") {
		t.Error("alive with another directory = true")
	}
	if alive(os.Getpid(), dir) {
		t.Error("alive(test process) = true: its command line does not name the directory")
	}
	if alive(0, dir) || alive(-1, dir) {
		t.Error("alive of pid <= 0")
	}
	cmd.Process.Kill()
	// Until reaped it is a zombie, which is not alive either.
	deadline := time.Now().Add(10 * time.Second)
	for alive(cmd.Process.Pid, dir) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(cmd.Process.Pid, dir) {
		t.Error("alive(killed process) = true")
	}
	cmd.Wait()
}

func TestDefaultCommand(t *testing.T) {
	ic := oci.ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"a"}}
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "/ep a"},
		{Config{Cmd: []string{"b"}}, "/ep b"},
		{Config{Cmd: []string{}}, "/ep"},
		{Config{Entrypoint: []string{"/x"}}, "/x"},
		{Config{Entrypoint: []string{"/x"}, Cmd: []string{"c"}}, "/x c"},
	} {
		if got := strings.Join(defaultCommand(tt.cfg, ic), " "); got != tt.want {
			t.Errorf("defaultCommand(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}

func TestListNewestFirst(t *testing.T) {
	rt := Runtime{Home: t.TempDir()}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range []string{"old", "new", "mid"} {
		dir := rt.sandboxDir(n)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		created := map[string]time.Duration{"old": 0, "mid": time.Hour, "new": 2 * time.Hour}[n]
		st := &State{Name: n, Status: StatusStopped, Created: base.Add(created)}
		if err := writeState(dir, st); err != nil {
			t.Fatal(err)
		}
	}
	// Junk in the directory is skipped.
	os.WriteFile(filepath.Join(rt.sandboxesDir(), "file"), nil, 0o600)
	os.Mkdir(filepath.Join(rt.sandboxesDir(), "nostate"), 0o700)
	list, err := List(rt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range list {
		names = append(names, st.Name)
	}
	if strings.Join(names, " ") != "new mid old" {
		t.Errorf("List = %v, want new mid old", names)
	}
}

func TestNetworkValidate(t *testing.T) {
	for _, n := range []*Network{
		{Disabled: true, Ports: []PortBinding{{GuestPort: 80}}},
		{Ports: []PortBinding{{Protocol: "sctp", GuestPort: 80}}},
		{Ports: []PortBinding{{HostPort: 80}}},
		{Ports: []PortBinding{{Bind: "localhost", GuestPort: 80}}},
		{Ports: []PortBinding{{HostPort: 8080, GuestPort: 80}, {HostPort: 8080, GuestPort: 81}}},
		{DNSServers: []string{"1.1.1.1"}},
		{MaxConnections: -1},
	} {
		if err := n.validate(); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", n)
		}
	}
	ok := &Network{Ports: []PortBinding{{HostPort: 8080, GuestPort: 80}, {Protocol: "udp", HostPort: 8080, GuestPort: 80}}, DNSServers: []string{"1.1.1.1:53"}}
	if err := ok.validate(); err != nil {
		t.Errorf("validate(%+v) = %v", ok, err)
	}
}

func TestInstall(t *testing.T) {
	src := t.TempDir()
	rt := Runtime{Home: t.TempDir()}
	for _, f := range []struct {
		name string
		p    *string
	}{{KernelName, &rt.Kernel}, {AgentName, &rt.Agent}, {BinaryName, &rt.Binary}} {
		*f.p = filepath.Join(src, f.name)
		if err := os.WriteFile(*f.p, []byte("content of "+f.name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Install(rt)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{got.Kernel, got.Agent, got.Binary} {
		if filepath.Dir(p) != filepath.Join(rt.Home, "bin") {
			t.Errorf("installed at %s", p)
		}
		if b, err := os.ReadFile(p); err != nil || !strings.HasPrefix(string(b), "content of ") {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	// A second Install keeps the files.
	if _, err := Install(rt); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvHome, rt.Home)
	t.Setenv(EnvKernel, "")
	t.Setenv(EnvAgent, "")
	if d := DefaultRuntime(); d.Kernel != got.Kernel || d.Agent != got.Agent {
		t.Errorf("DefaultRuntime after Install = %+v, want the installed files", d)
	}
}

func TestCreateRejectsLongSocketPath(t *testing.T) {
	home := filepath.Join(t.TempDir(), strings.Repeat("h", 90))
	_, err := Create(t.Context(), Runtime{Home: home, Kernel: "/bin/sh", Agent: "/bin/sh", Binary: "/bin/sh"},
		Config{Name: strings.Repeat("n", 20), Image: "busybox"})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Unix socket") {
		t.Errorf("Create with a long socket path = %v, want ErrInvalidConfig naming the socket", err)
	}
}
