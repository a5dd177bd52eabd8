// SPDX-License-Identifier: Apache-2.0

package microsandbox

import "time"

// SandboxConfig is the configuration CreateSandbox assembles from its
// options. The zero value of each field means the default its option names.
type SandboxConfig struct {
	Name      string
	Image     string
	MemoryMiB uint32
	CPUs      uint8
	Env       map[string]string
	Workdir   string
	User      string
	Hostname  string
	Detached  bool
	// Labels are merged across WithLabels and WithLabel calls.
	Labels map[string]string
	// Shell is the interactive shell (AttachShell); "" means /bin/sh.
	Shell string
	// Entrypoint and Cmd replace the image's for ExecDefault; CmdSet
	// records a WithCmd call (with no arguments it clears the image's).
	Entrypoint []string
	Cmd        []string
	CmdSet     bool
	// Network is the network configuration; nil means the public profile.
	Network *NetworkConfig
	// Ports (host → guest, TCP), PortsUDP and PortBindings publish guest
	// ports on the host.
	Ports        map[uint16]uint16
	PortsUDP     map[uint16]uint16
	PortBindings []PortBinding
	// Replace and ReplaceWithTimeout replace an existing sandbox of the
	// same name.
	Replace            bool
	ReplaceWithTimeout *time.Duration
	// MaxDuration stops the sandbox that long after boot; zero: never.
	MaxDuration time.Duration
	// IdleTimeout stops the sandbox after that long without activity;
	// zero: never.
	IdleTimeout time.Duration
	// Ephemeral removes the sandbox's record once it stopped.
	Ephemeral bool
	// Volumes are the mounts by guest path (WithMounts).
	Volumes map[string]MountConfig
	// Scripts are merged across WithScripts calls.
	Scripts map[string]string
	// RootDisk is the writable layer; nil means a managed 4096 MiB disk.
	RootDisk *RootDiskConfig
	// LogLevel is the guest console's verbosity; QuietLogs turns it off.
	LogLevel  LogLevel
	QuietLogs bool
	// PullPolicy says when the image is fetched; "" means if-missing.
	PullPolicy PullPolicy
	// registry collects the registry options (credentials stay out of
	// the exported, printable fields).
	registry registryOptions
	// Patches are applied to the root filesystem in order (WithPatches).
	Patches []PatchConfig
}

// SandboxOption sets fields of a SandboxConfig. Options only set fields;
// CreateSandbox validates the result.
type SandboxOption func(*SandboxConfig)

// WithImage sets the OCI image reference of the root filesystem
// ("busybox", "docker.io/library/python:3.12", "oci:/layout/dir:name").
// Required; repeating it replaces.
func WithImage(ref string) SandboxOption { return func(c *SandboxConfig) { c.Image = ref } }

// WithMemory sets the guest RAM in MiB; default 512; repeating replaces.
func WithMemory(mib uint32) SandboxOption { return func(c *SandboxConfig) { c.MemoryMiB = mib } }

// WithCPUs sets the number of vCPUs; default 1; repeating replaces.
func WithCPUs(n uint8) SandboxOption { return func(c *SandboxConfig) { c.CPUs = n } }

// WithEnv merges env over the image's environment for every exec; repeated
// calls merge, later keys win. Keys starting with MSB_ are rejected.
func WithEnv(env map[string]string) SandboxOption {
	return func(c *SandboxConfig) {
		if c.Env == nil {
			c.Env = map[string]string{}
		}
		for k, v := range env {
			c.Env[k] = v
		}
	}
}

// WithWorkdir sets the absolute default working directory of execs;
// default the image's, else "/"; repeating replaces.
func WithWorkdir(path string) SandboxOption { return func(c *SandboxConfig) { c.Workdir = path } }

// WithUser sets the default user of execs (UID, name or user:group);
// default the image's, else root; repeating replaces.
func WithUser(user string) SandboxOption { return func(c *SandboxConfig) { c.User = user } }

// WithHostname sets the guest host name (1 to 64 bytes, RFC 1123); default
// derived from the sandbox name; repeating replaces.
func WithHostname(name string) SandboxOption { return func(c *SandboxConfig) { c.Hostname = name } }

// WithDetached lets the sandbox outlive the creating process. Without it
// the sandbox stops when its creator exits.
func WithDetached() SandboxOption { return func(c *SandboxConfig) { c.Detached = true } }

// WithLabels merges labels into the sandbox's labels (later keys win).
// Keys may not be empty nor start with "sandbox.", "microsandbox." or
// "service.".
func WithLabels(labels map[string]string) SandboxOption {
	return func(c *SandboxConfig) {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for k, v := range labels {
			c.Labels[k] = v
		}
	}
}

// WithLabel sets one label.
func WithLabel(key, value string) SandboxOption {
	return WithLabels(map[string]string{key: value})
}

// WithScripts installs each script as the executable /.msb/scripts/NAME,
// a directory first on PATH, so Exec(NAME) runs it. Repeated calls merge.
func WithScripts(scripts map[string]string) SandboxOption {
	return func(c *SandboxConfig) {
		if c.Scripts == nil {
			c.Scripts = map[string]string{}
		}
		for k, v := range scripts {
			c.Scripts[k] = v
		}
	}
}

// WithShell sets the shell AttachShell runs; default /bin/sh. (Shell and
// ShellStream always use /bin/sh -c, as upstream's Go SDK does.)
func WithShell(path string) SandboxOption { return func(c *SandboxConfig) { c.Shell = path } }

// WithEntrypoint replaces the image's entrypoint for ExecDefault.
func WithEntrypoint(cmd ...string) SandboxOption {
	return func(c *SandboxConfig) { c.Entrypoint = append([]string{}, cmd...) }
}

// WithCmd replaces the image's cmd for ExecDefault; with no arguments it
// clears it.
func WithCmd(cmd ...string) SandboxOption {
	return func(c *SandboxConfig) { c.Cmd, c.CmdSet = append([]string{}, cmd...), true }
}

// WithReplace replaces an existing sandbox of the same name: a running one
// gets SIGTERM, then SIGKILL after 10 seconds, and its record is removed.
func WithReplace() SandboxOption { return func(c *SandboxConfig) { c.Replace = true } }

// WithReplaceWithTimeout is WithReplace with d (rounded up to a
// millisecond) between SIGTERM and SIGKILL; zero kills at once.
func WithReplaceWithTimeout(d time.Duration) SandboxOption {
	return func(c *SandboxConfig) {
		d = ceilDuration(d, time.Millisecond)
		c.Replace, c.ReplaceWithTimeout = true, &d
	}
}

// WithMaxDuration stops the sandbox d (rounded up to a second) after it
// became ready (its agent first answered); zero means no limit.
func WithMaxDuration(d time.Duration) SandboxOption {
	return func(c *SandboxConfig) { c.MaxDuration = ceilDuration(d, time.Second) }
}

// WithIdleTimeout stops the sandbox after d (rounded up to a second)
// without activity: an exec, a file operation or a Touch through this
// package. Zero means never.
func WithIdleTimeout(d time.Duration) SandboxOption {
	return func(c *SandboxConfig) { c.IdleTimeout = ceilDuration(d, time.Second) }
}

// LogLevel is a log verbosity.
type LogLevel string

// Log levels.
const (
	LogLevelDefault LogLevel = ""
	LogLevelTrace   LogLevel = "trace"
	LogLevelDebug   LogLevel = "debug"
	LogLevelInfo    LogLevel = "info"
	LogLevelWarn    LogLevel = "warn"
	LogLevelError   LogLevel = "error"
)

// WithLogLevel sets how much the guest kernel writes to the sandbox's
// console log (console.log in its directory); default warn.
func WithLogLevel(l LogLevel) SandboxOption { return func(c *SandboxConfig) { c.LogLevel = l } }

// WithQuietLogs keeps the guest console log to emergencies.
func WithQuietLogs() SandboxOption { return func(c *SandboxConfig) { c.QuietLogs = true } }

// WithEphemeral removes the sandbox's record and files once it stopped.
func WithEphemeral(on bool) SandboxOption { return func(c *SandboxConfig) { c.Ephemeral = on } }

// WithPorts publishes guest TCP ports on the host: host port → guest port,
// bound to 127.0.0.1. Repeated calls merge.
func WithPorts(ports map[uint16]uint16) SandboxOption {
	return func(c *SandboxConfig) {
		if c.Ports == nil {
			c.Ports = map[uint16]uint16{}
		}
		for h, g := range ports {
			c.Ports[h] = g
		}
	}
}

// WithPortsUDP is WithPorts for UDP.
func WithPortsUDP(ports map[uint16]uint16) SandboxOption {
	return func(c *SandboxConfig) {
		if c.PortsUDP == nil {
			c.PortsUDP = map[uint16]uint16{}
		}
		for h, g := range ports {
			c.PortsUDP[h] = g
		}
	}
}

// WithPortBindings publishes ports with explicit bind addresses and
// protocols. Repeated calls append.
func WithPortBindings(b ...PortBinding) SandboxOption {
	return func(c *SandboxConfig) { c.PortBindings = append(c.PortBindings, b...) }
}

// ceilDuration rounds a positive d up to a multiple of unit.
func ceilDuration(d, unit time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return (d + unit - 1).Truncate(unit)
}

// ExecConfig is the configuration Exec assembles from its options.
type ExecConfig struct {
	Cwd       string
	Env       map[string]string
	User      string
	Timeout   time.Duration
	Stdin     []byte
	StdinPipe bool
	TTY       bool
}

// ExecOption sets fields of an ExecConfig.
type ExecOption func(*ExecConfig)

// WithExecCwd sets the working directory; default the sandbox's workdir.
func WithExecCwd(path string) ExecOption { return func(c *ExecConfig) { c.Cwd = path } }

// WithExecEnv overlays env on the sandbox's environment; repeated calls
// merge, later keys win.
func WithExecEnv(env map[string]string) ExecOption {
	return func(c *ExecConfig) {
		if c.Env == nil {
			c.Env = map[string]string{}
		}
		for k, v := range env {
			c.Env[k] = v
		}
	}
}

// WithExecUser runs the command as user (UID, name or user:group); default
// the sandbox's user.
func WithExecUser(user string) ExecOption { return func(c *ExecConfig) { c.User = user } }

// WithExecTimeout kills the command after d, rounded up to whole seconds
// as upstream does; zero means no timeout. Exec then fails with
// ErrExecTimeout.
func WithExecTimeout(d time.Duration) ExecOption {
	return func(c *ExecConfig) {
		c.Timeout = ceilDuration(d, time.Second)
	}
}

// WithExecStdin sends b as the command's standard input; default
// /dev/null. (A pure-Go addition: upstream's collected Exec has no stdin.)
func WithExecStdin(b []byte) ExecOption { return func(c *ExecConfig) { c.Stdin = b } }

// WithExecStdinPipe gives a streamed command a stdin pipe: take it with
// ExecHandle.TakeStdin.
func WithExecStdinPipe() ExecOption { return func(c *ExecConfig) { c.StdinPipe = true } }

// WithExecTTY runs the command on a pseudo-terminal (24×80 at first;
// stderr merged into stdout).
func WithExecTTY(on bool) ExecOption { return func(c *ExecConfig) { c.TTY = on } }
