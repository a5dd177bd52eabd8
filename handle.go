// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// SandboxStatus is a sandbox's lifecycle state.
type SandboxStatus string

// Sandbox statuses.
const (
	SandboxStatusStarting SandboxStatus = "starting"
	SandboxStatusRunning  SandboxStatus = "running"
	SandboxStatusDraining SandboxStatus = "draining"
	SandboxStatusStopped  SandboxStatus = "stopped"
	SandboxStatusCrashed  SandboxStatus = "crashed"
)

// SandboxHandle is a snapshot of a sandbox's persisted record. Its methods
// act on the sandbox by name.
type SandboxHandle struct {
	st *sandbox.State
}

// GetSandbox looks up the sandbox name without connecting to it. A sandbox
// whose process died is reported as crashed.
func GetSandbox(ctx context.Context, name string) (*SandboxHandle, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	st, err := sandbox.Get(sandbox.DefaultRuntime(), name)
	if err != nil {
		return nil, wrap(err)
	}
	return &SandboxHandle{st: st}, nil
}

// Name returns the sandbox's name.
func (h *SandboxHandle) Name() string { return h.st.Name }

// Status returns the status at the time of the lookup.
func (h *SandboxHandle) Status() SandboxStatus { return SandboxStatus(h.st.Status) }

// CreatedAt returns the creation time.
func (h *SandboxHandle) CreatedAt() time.Time { return h.st.Created }

// UpdatedAt returns the time of the last state change.
func (h *SandboxHandle) UpdatedAt() time.Time { return h.st.Updated }

// Labels returns the sandbox's labels.
func (h *SandboxHandle) Labels() map[string]string {
	out := make(map[string]string, len(h.st.Config.Labels))
	for k, v := range h.st.Config.Labels {
		out[k] = v
	}
	return out
}

// ConfigJSON returns the sandbox's configuration as JSON, in upstream's
// persisted shape where the fields exist here.
func (h *SandboxHandle) ConfigJSON() string {
	b, _ := json.Marshal(persistedConfig(&h.st.Config))
	return string(b)
}

// Config returns the sandbox's configuration as CreateSandbox received it
// (registry credentials are never kept; mounts and patches are in their
// persisted form only).
func (h *SandboxHandle) Config() (*SandboxConfig, error) {
	c := h.st.Config
	out := &SandboxConfig{
		Name: c.Name, Image: c.Image, MemoryMiB: c.MemoryMiB, CPUs: c.CPUs, Env: c.Env,
		Workdir: c.Workdir, User: c.User, Hostname: c.Hostname, Detached: c.Detached,
		Labels: c.Labels, Shell: c.Shell, Entrypoint: c.Entrypoint, Cmd: c.Cmd, CmdSet: c.Cmd != nil,
		MaxDuration: c.MaxDuration, IdleTimeout: c.IdleTimeout, Ephemeral: c.Ephemeral,
		PullPolicy: PullPolicy(c.PullPolicy), Scripts: c.Scripts, LogLevel: LogLevel(c.LogLevel),
	}
	if c.LogLevel == "off" {
		out.LogLevel, out.QuietLogs = "", true
	}
	if d := c.RootDisk; d != nil {
		out.RootDisk = &RootDiskConfig{kind: RootDiskKind(d.Kind), sizeMiB: d.SizeMiB}
	}
	if n := c.Network; n != nil {
		nc := &NetworkConfig{Disabled: n.Disabled}
		for _, p := range n.Ports {
			nc.PortBindings = append(nc.PortBindings, PortBinding{Bind: p.Bind, HostPort: p.HostPort, GuestPort: p.GuestPort, Protocol: PolicyProtocol(p.Protocol)})
		}
		out.Network = nc
	}
	return out, nil
}

// Refresh reads the record again.
func (h *SandboxHandle) Refresh(ctx context.Context) (*SandboxHandle, error) {
	return GetSandbox(ctx, h.st.Name)
}

// Connect returns a live handle on the running sandbox. It does not own
// the sandbox: closing it leaves the sandbox running.
func (h *SandboxHandle) Connect(ctx context.Context) (*Sandbox, error) {
	sb, err := sandbox.Open(ctx, sandbox.DefaultRuntime(), h.st.Name)
	if err != nil {
		return nil, wrap(err)
	}
	return &Sandbox{sb: sb}, nil
}

// Start boots the stopped sandbox again, attached to this process.
func (h *SandboxHandle) Start(ctx context.Context) (*Sandbox, error) {
	return StartSandbox(ctx, h.st.Name)
}

// StartDetached boots the stopped sandbox again, detached.
func (h *SandboxHandle) StartDetached(ctx context.Context) (*Sandbox, error) {
	return StartSandboxDetached(ctx, h.st.Name)
}

// Stop stops the running sandbox gracefully and waits for it.
func (h *SandboxHandle) Stop(ctx context.Context, opts ...StopOption) error {
	sb, err := h.Connect(ctx)
	if err != nil {
		if IsKind(err, ErrSandboxNotRunning) {
			return nil
		}
		return err
	}
	defer sb.Close()
	return sb.Stop(ctx, opts...)
}

// Kill kills the running sandbox and waits to see it gone.
func (h *SandboxHandle) Kill(ctx context.Context, opts ...KillOption) error {
	var o killOptions
	for _, f := range opts {
		f(&o)
	}
	if o.timeout <= 0 {
		o.timeout = sandbox.DefaultKillTimeout
	}
	if err := sandbox.RequestKill(sandbox.DefaultRuntime(), h.st.Name); err != nil {
		if IsKind(wrap(err), ErrSandboxNotRunning) {
			return nil
		}
		return wrap(err)
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	_, err := waitUntilStopped(wctx, h.st.Name)
	return err
}

// RequestStop asks the sandbox to stop gracefully and returns at once.
func (h *SandboxHandle) RequestStop(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.RequestStop(sandbox.DefaultRuntime(), h.st.Name))
}

// RequestKill kills the sandbox and returns at once.
func (h *SandboxHandle) RequestKill(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.RequestKill(sandbox.DefaultRuntime(), h.st.Name))
}

// RequestDrain asks the sandbox to drain: no new processes, and a stop
// once the running ones ended. It returns at once; the status is draining
// until then.
func (h *SandboxHandle) RequestDrain(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.RequestDrain(sandbox.DefaultRuntime(), h.st.Name))
}

// WaitUntilStopped waits until the sandbox is stopped or crashed.
func (h *SandboxHandle) WaitUntilStopped(ctx context.Context) (*SandboxStopResult, error) {
	return waitUntilStopped(ctx, h.st.Name)
}

// Remove deletes the record of the stopped or crashed sandbox.
func (h *SandboxHandle) Remove(ctx context.Context) error {
	return RemoveSandbox(ctx, h.st.Name)
}

// Metrics samples the running sandbox.
func (h *SandboxHandle) Metrics(ctx context.Context) (*Metrics, error) {
	sb, err := h.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	return sb.Metrics(ctx)
}

// Ping checks that the running sandbox's agent answers. A stopped sandbox
// is ErrSandboxNotRunning; Ping never starts one.
func (h *SandboxHandle) Ping(ctx context.Context) (*SandboxPingResult, error) {
	sb, err := h.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	return sb.Ping(ctx)
}

// Touch records activity on the running sandbox (see Sandbox.Touch).
func (h *SandboxHandle) Touch(ctx context.Context) (*SandboxTouchResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	return touch(h.st.Name)
}

// SandboxPage is one page of ListSandboxesWith.
type SandboxPage struct {
	Sandboxes []*SandboxHandle
	// NextCursor continues the listing; nil on the last page.
	NextCursor *string
}

// Listing limits (upstream's).
const (
	defaultListLimit = 20
	maxListLimit     = 100
)

// ListOption configures ListSandboxesWith.
type ListOption func(*listOptions)

type listOptions struct {
	cursor string
	limit  int
	labels map[string]string
}

// WithListCursor continues from a page's NextCursor.
func WithListCursor(c string) ListOption { return func(o *listOptions) { o.cursor = c } }

// WithListLimit sets the page size, 1 to 100; default 20.
func WithListLimit(n int) ListOption { return func(o *listOptions) { o.limit = n } }

// WithListLabels keeps sandboxes carrying every one of labels. Repeated
// calls merge.
func WithListLabels(labels map[string]string) ListOption {
	return func(o *listOptions) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		for k, v := range labels {
			o.labels[k] = v
		}
	}
}

// ListSandboxes returns the first page (20) of sandboxes, newest first.
func ListSandboxes(ctx context.Context) (*SandboxPage, error) {
	return ListSandboxesWith(ctx)
}

// ListSandboxesWith returns a page of sandboxes, newest first, filtered by
// labels.
func ListSandboxesWith(ctx context.Context, opts ...ListOption) (*SandboxPage, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	o := listOptions{limit: defaultListLimit}
	for _, f := range opts {
		f(&o)
	}
	if o.limit < 1 || o.limit > maxListLimit {
		return nil, &Error{Kind: ErrInvalidConfig, Message: fmt.Sprintf("invalid config: list limit %d: want 1 to %d", o.limit, maxListLimit)}
	}
	start := 0
	if o.cursor != "" {
		n, err := strconv.Atoi(o.cursor)
		if err != nil || n < 0 {
			return nil, &Error{Kind: ErrInvalidArgument, Message: fmt.Sprintf("list cursor %q is not one this package returned", o.cursor)}
		}
		start = n
	}
	all, err := sandbox.List(sandbox.DefaultRuntime())
	if err != nil {
		return nil, wrap(err)
	}
	var match []*sandbox.State
	for _, st := range all {
		ok := true
		for k, v := range o.labels {
			if got, has := st.Config.Labels[k]; !has || got != v {
				ok = false
			}
		}
		if ok {
			match = append(match, st)
		}
	}
	page := &SandboxPage{}
	for i := start; i < len(match) && len(page.Sandboxes) < o.limit; i++ {
		page.Sandboxes = append(page.Sandboxes, &SandboxHandle{st: match[i]})
	}
	if next := start + o.limit; next < len(match) {
		c := strconv.Itoa(next)
		page.NextCursor = &c
	}
	return page, nil
}

// envEntry is one env pair in the persisted config.
type envEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// persistedConfig is upstream's persisted SandboxConfig shape, for the
// fields this runtime has.
func persistedConfig(c *sandbox.Config) map[string]any {
	c2 := *c
	env := make([]envEntry, 0, len(c2.Env))
	keys := make([]string, 0, len(c2.Env))
	for k := range c2.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, envEntry{k, c2.Env[k]})
	}
	labels := c2.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	mem, cpus := c2.MemoryMiB, c2.CPUs
	logLevel := nilIfEmpty(c2.LogLevel)
	if c2.LogLevel == "off" {
		logLevel = nil
	}
	runtime := map[string]any{
		"workdir": nilIfEmpty(c2.Workdir), "hostname": nilIfEmpty(c2.Hostname),
		"user": nilIfEmpty(c2.User), "entrypoint": c2.Entrypoint, "cmd": c2.Cmd,
		"shell": nilIfEmpty(c2.Shell), "scripts": c2.Scripts, "log_level": logLevel,
	}
	pull := map[string]string{"": "IfMissing", "if-missing": "IfMissing", "always": "Always", "never": "Never"}[c2.PullPolicy]
	lifecycle := map[string]any{"ephemeral": c2.Ephemeral}
	if c2.MaxDuration > 0 {
		lifecycle["max_duration_secs"] = int64(c2.MaxDuration / time.Second)
	}
	return map[string]any{
		"name":        c2.Name,
		"image":       map[string]any{"Oci": map[string]any{"reference": c2.Image}},
		"resources":   map[string]any{"cpus": cpus, "memory_mib": mem},
		"runtime":     runtime,
		"env":         env,
		"labels":      labels,
		"network":     c2.Network,
		"lifecycle":   lifecycle,
		"mounts":      c2.Mounts,
		"patches":     c2.Patches,
		"pull_policy": pull,
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
