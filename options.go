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

// ExecConfig is the configuration Exec assembles from its options.
type ExecConfig struct {
	Cwd     string
	Env     map[string]string
	User    string
	Timeout time.Duration
	Stdin   []byte
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
		if d > 0 {
			d = (d + time.Second - 1).Truncate(time.Second)
		}
		c.Timeout = d
	}
}

// WithExecStdin sends b as the command's standard input; default
// /dev/null. (A pure-Go addition: upstream's collected Exec has no stdin.)
func WithExecStdin(b []byte) ExecOption { return func(c *ExecConfig) { c.Stdin = b } }
