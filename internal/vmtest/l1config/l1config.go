// SPDX-License-Identifier: Apache-2.0

package l1config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"
)

// Path is where the harness puts the run configuration in the initramfs.
const Path = "/vmtest/config.json"

// NonceEnv names the kernel command-line variable (passed to /init in its
// environment) carrying the nonce of the exit line, so that test output
// cannot forge the status.
const NonceEnv = "vmtest_nonce"

// SetupFailed is the exit status reported when /init itself fails.
const SetupFailed = 125

// Config is what /init runs.
type Config struct {
	Argv    []string `json:"argv"`
	Env     []string `json:"env"`
	Dir     string   `json:"dir"`
	Modules []string `json:"modules"` // loaded in order before the run
	// ModuleParams are the parameters of a module, by file base name
	// ("kvm-amd.ko": "vgif=0").
	ModuleParams map[string]string `json:"module_params,omitempty"`
}

// Load reads and checks a Config.
func Load(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read run config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("parse run config %s: %w", path, err)
	}
	if len(c.Argv) == 0 {
		return c, errors.New("run config has no argv")
	}
	return c, nil
}

// ExitLine is the console line /init prints when the run ends.
func ExitLine(nonce string, code int) string {
	return fmt.Sprintf("vmtest-exit %s %d", nonce, code)
}

// AliveLine is the console line /init prints every AliveInterval while the
// test runs: a console silent for much longer means the L1 VM froze.
func AliveLine(nonce string) string { return "vmtest-alive " + nonce }

// AliveInterval is how often /init prints AliveLine.
const AliveInterval = 10 * time.Second

var exitLine = regexp.MustCompile(`vmtest-exit (\S+) (-?\d+)\s*$`)

// ParseExitLine returns the exit status in line if it is the exit line for
// nonce.
func ParseExitLine(line, nonce string) (int, bool) {
	m := exitLine.FindStringSubmatch(line)
	if m == nil || m[1] != nonce {
		return 0, false
	}
	code, err := strconv.Atoi(m[2])
	return code, err == nil
}
