// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Environment variables read by DefaultRuntime.
const (
	EnvHome   = "MSB_HOME"   // the state directory
	EnvKernel = "MSB_KERNEL" // the guest kernel (vmlinux)
	EnvAgent  = "MSB_AGENT"  // the static msb-agent binary
	EnvBinary = "MSB_BIN"    // the msb binary run as the sandbox process
	// EnvBootTimeout overrides DefaultBootTimeout (a Go duration, "90s").
	EnvBootTimeout = "MSB_BOOT_TIMEOUT"
)

// Default file names looked up next to the executable.
const (
	KernelName = "vmlinux"
	AgentName  = "msb-agent"
	BinaryName = "msb"
	homeName   = ".microsandbox-go"
)

// Runtime says where the state directory and the runtime's files are.
type Runtime struct {
	// Home is the state directory (see the package documentation).
	// Required.
	Home string
	// Kernel is the uncompressed guest kernel. Required.
	Kernel string
	// Agent is the static msb-agent binary. Required.
	Agent string
	// Binary is the msb binary started as "Binary __sandbox DIR".
	// Required.
	Binary string
	// BootTimeout bounds the wait for the agent after the sandbox process
	// started; zero means DefaultBootTimeout.
	BootTimeout time.Duration
}

// DefaultRuntime resolves the runtime from the environment: Home from
// MSB_HOME, else ~/.microsandbox-go; Kernel, Agent and Binary from
// MSB_KERNEL, MSB_AGENT and MSB_BIN, else the files vmlinux, msb-agent and
// msb next to the running executable (Binary: the executable itself when it
// is named msb), else in Home's bin directory (Install); BootTimeout from
// MSB_BOOT_TIMEOUT. Paths are made absolute. A file that cannot be found is
// left empty; Check reports it.
func DefaultRuntime() Runtime {
	var rt Runtime
	rt.Home = os.Getenv(EnvHome)
	if rt.Home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			rt.Home = filepath.Join(h, homeName)
		}
	}
	exe, _ := os.Executable()
	exeDir := ""
	if exe != "" {
		exeDir = filepath.Dir(exe)
	}
	binDir := ""
	if rt.Home != "" {
		binDir = rt.binDir()
	}
	find := func(env, name string) string {
		if p := os.Getenv(env); p != "" {
			return p
		}
		if exe != "" && name == BinaryName && filepath.Base(exe) == BinaryName {
			return exe
		}
		for _, dir := range []string{exeDir, binDir} {
			if dir == "" {
				continue
			}
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		return ""
	}
	rt.Kernel = find(EnvKernel, KernelName)
	rt.Agent = find(EnvAgent, AgentName)
	rt.Binary = find(EnvBinary, BinaryName)
	if d, err := time.ParseDuration(os.Getenv(EnvBootTimeout)); err == nil && d > 0 {
		rt.BootTimeout = d
	}
	rt.abs()
	return rt
}

func (rt *Runtime) abs() {
	for _, p := range []*string{&rt.Home, &rt.Kernel, &rt.Agent, &rt.Binary} {
		if *p != "" {
			if a, err := filepath.Abs(*p); err == nil {
				*p = a
			}
		}
	}
}

// Check reports every missing path of rt together, each wrapping
// ErrInvalidConfig.
func (rt *Runtime) Check() error {
	var errs []error
	if rt.Home == "" {
		errs = append(errs, fmt.Errorf("%w: no state directory (set %s)", ErrInvalidConfig, EnvHome))
	}
	for _, f := range []struct{ what, path, env string }{
		{"guest kernel", rt.Kernel, EnvKernel},
		{"agent", rt.Agent, EnvAgent},
		{"msb binary", rt.Binary, EnvBinary},
	} {
		if f.path == "" {
			errs = append(errs, fmt.Errorf("%w: %s not found (set %s)", ErrInvalidConfig, f.what, f.env))
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, f.what, err))
		}
	}
	return errors.Join(errs...)
}

// Paths under Home.
func (rt *Runtime) binDir() string             { return filepath.Join(rt.Home, "bin") }
func (rt *Runtime) imagesDir() string          { return filepath.Join(rt.Home, "images") }
func (rt *Runtime) rootfsDir() string          { return filepath.Join(rt.Home, "rootfs") }
func (rt *Runtime) sandboxesDir() string       { return filepath.Join(rt.Home, "sandboxes") }
func (rt *Runtime) sandboxDir(n string) string { return filepath.Join(rt.sandboxesDir(), n) }

// SandboxDir is the directory of the sandbox name.
func (rt *Runtime) SandboxDir(name string) string { return rt.sandboxDir(name) }

// Files in a sandbox directory.
const (
	stateFile     = "state.json"
	stateLockFile = "state.lock"
	vmFile        = "vm.json"
	initrdFile    = "initramfs.cpio"
	// restartInitrdFile boots a sandbox with a managed root disk again:
	// the first boot's configuration without its patches.
	restartInitrdFile = "initramfs-restart.cpio"
	socketFile        = "agent.sock"
	consoleFile       = "console.log"
	runtimeLog        = "runtime.log"
	statsFile         = "stats.json"
	// activityFile's modification time is the sandbox's last activity
	// (IdleTimeout).
	activityFile = "activity"
	// readyFile is written when the agent first answered after a boot.
	readyFile = "ready"
)

// SocketPath is the agent socket of the sandbox in dir.
func SocketPath(dir string) string { return filepath.Join(dir, socketFile) }
