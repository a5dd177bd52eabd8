// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

// Metrics is one sample of a running sandbox: the sandbox process's view of
// the VM (Stats), the host's view of the process, and the guest's own.
type Metrics struct {
	Stats
	// MemoryLimitBytes is the configured guest RAM.
	MemoryLimitBytes uint64
	// HostResidentBytes is the sandbox process's resident memory (guest
	// RAM it touched plus the VMM's own).
	HostResidentBytes uint64
	// Guest is the agent's sample (memory, root disk, load, uptime,
	// processes).
	Guest host.Metrics
	// Uptime is the time since the VM booted.
	Uptime time.Duration
}

// Metrics samples the sandbox. Right after boot, before the sandbox
// process wrote its first stats, it fails; callers retry.
func (sb *Sandbox) Metrics(ctx context.Context) (*Metrics, error) {
	c, err := sb.Agent()
	if err != nil {
		return nil, err
	}
	st, err := ReadStats(sb.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMetricsUnavailable, err)
	}
	g, err := c.Metrics(ctx, "/")
	if err != nil {
		return nil, sb.agentErr(err)
	}
	state, err := ReadState(sb.dir)
	if err != nil {
		return nil, err
	}
	m := &Metrics{
		Stats: *st, Guest: g,
		MemoryLimitBytes:  uint64(state.Config.withDefaults().MemoryMiB) << 20,
		HostResidentBytes: residentBytes(sb.pid),
		Uptime:            time.Since(st.Booted),
	}
	return m, nil
}

// residentBytes is VmRSS of process pid, or 0 when it cannot be read.
func residentBytes(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseUint(f[0], 10, 54)
				return n << 10
			}
		}
	}
	return 0
}

// List returns the state of every sandbox under rt.Home, newest first,
// seeing those whose process died as crashed (see Get).
func List(rt Runtime) ([]*State, error) {
	rt.abs()
	ents, err := os.ReadDir(rt.sandboxesDir())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: list: %w", err)
	}
	var out []*State
	for _, e := range ents {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		st, err := Get(rt, e.Name())
		if err != nil {
			continue // removed meanwhile, or still being created
		}
		out = append(out, st)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
