// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// TestConfigRoundTrip converts options to the persisted configuration and
// back, and checks the upstream spellings ConfigJSON keeps.
func TestConfigRoundTrip(t *testing.T) {
	c := SandboxConfig{Name: "x"}
	for _, o := range []SandboxOption{
		WithImage("busybox"), WithMemory(256), WithCPUs(2), WithEnv(map[string]string{"A": "1"}),
		WithWorkdir("/w"), WithLabels(map[string]string{"k": "v"}), WithCmd(), WithQuietLogs(),
		WithMaxDuration(90 * time.Minute), WithPullPolicy(PullPolicyNever),
		WithRootDisk(RootDisk.Tmpfs(RootDiskTmpfsOptions{SizeMiB: 64})),
		WithPorts(map[uint16]uint16{8080: 80}),
	} {
		o(&c)
	}
	sc, err := c.sandboxConfig()
	if err != nil {
		t.Fatal(err)
	}
	h := &SandboxHandle{st: &sandbox.State{Name: "x", Config: sc}}
	got, err := h.Config()
	if err != nil {
		t.Fatal(err)
	}
	if got.Image != "busybox" || got.MemoryMiB != 256 || got.CPUs != 2 || got.Env["A"] != "1" || !got.CmdSet || len(got.Cmd) != 0 ||
		!got.QuietLogs || got.MaxDuration != 90*time.Minute || got.PullPolicy != PullPolicyNever ||
		got.RootDisk.Kind() != RootDiskKindTmpfs || got.RootDisk.SizeMiB() != 64 || got.Network.PortBindings[0].GuestPort != 80 {
		t.Errorf("Config() = %+v", got)
	}
	js := h.ConfigJSON()
	for _, want := range []string{`"log_level":null`, `"pull_policy":"Never"`, `"max_duration_secs":5400`, `"env":[{"key":"A","value":"1"}]`, `"cmd":[]`} {
		if !strings.Contains(js, want) {
			t.Errorf("ConfigJSON lacks %s:\n%s", want, js)
		}
	}
	var anyJSON map[string]any
	if err := json.Unmarshal([]byte(js), &anyJSON); err != nil {
		t.Errorf("ConfigJSON is not JSON: %v", err)
	}
}
