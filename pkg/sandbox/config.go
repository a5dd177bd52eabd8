// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// Limits and defaults (upstream-api.md §1.2 and §4.5).
const (
	// MaxNameLen is the longest sandbox name in bytes.
	MaxNameLen = 128
	// MaxHostnameLen is the longest guest host name in bytes.
	MaxHostnameLen = 64
	// DefaultMemoryMiB is the guest RAM when Config.MemoryMiB is zero.
	DefaultMemoryMiB = 512
	// DefaultCPUs is the vCPU count when Config.CPUs is zero.
	DefaultCPUs = 1
	// MaxCPUs bounds Config.CPUs.
	MaxCPUs = 64
	// MinMemoryMiB is the least guest RAM the agent boots in.
	MinMemoryMiB = 64
)

// Config describes a sandbox. The zero value of each field means the
// default its comment names.
type Config struct {
	// Name identifies the sandbox: 1 to 128 bytes, an ASCII letter or
	// digit and then letters, digits, '.', '_' or '-'. Required.
	Name string `json:"name"`
	// Image is the OCI reference of the root image ("busybox",
	// "oci:/path/layout:busybox"). Required.
	Image string `json:"image"`
	// MemoryMiB is the guest RAM in MiB; zero means DefaultMemoryMiB.
	MemoryMiB uint32 `json:"memory_mib,omitempty"`
	// CPUs is the number of vCPUs; zero means DefaultCPUs.
	CPUs uint8 `json:"cpus,omitempty"`
	// Env is merged over the image's environment (later wins). Keys must
	// be non-empty, contain no '=' and not start with "MSB_".
	Env map[string]string `json:"env,omitempty"`
	// Workdir is the default working directory of execs; "" means the
	// image's, else "/".
	Workdir string `json:"workdir,omitempty"`
	// User is the default user of execs ("name", "uid", "user:group");
	// "" means the image's, else root.
	User string `json:"user,omitempty"`
	// Hostname is the guest's host name; "" derives it from Name.
	Hostname string `json:"hostname,omitempty"`
	// Detached lets the sandbox outlive its creating process; otherwise
	// the sandbox stops when the creator closes its handle or dies.
	Detached bool `json:"detached,omitempty"`
	// Labels are free-form key/value pairs for selection (List). Keys are
	// non-empty and do not start with a reserved prefix ("sandbox.",
	// "microsandbox.", "service.").
	Labels map[string]string `json:"labels,omitempty"`
	// Network configures the NIC; nil means the default (public profile).
	Network *Network `json:"network,omitempty"`
	// Entrypoint and Cmd replace the image's for ExecDefault. A nil Cmd
	// keeps the image's; an empty non-nil Cmd clears it.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd"`
	// MaxDuration, if positive, stops the sandbox that long after it
	// became ready (its agent first answered).
	MaxDuration time.Duration `json:"max_duration,omitempty"`
	// IdleTimeout, if positive, stops the sandbox after that long without
	// activity (an exec, a file operation or a Touch through this
	// package).
	IdleTimeout time.Duration `json:"idle_timeout,omitempty"`
	// Ephemeral removes the sandbox's record and files once it stopped.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Patches change the root filesystem before anything runs, in order
	// (see Patch).
	Patches []Patch `json:"patches,omitempty"`
	// Mounts are mounted in the guest, in order, after the root.
	Mounts []Mount `json:"mounts,omitempty"`
	// Shell is the interactive shell (AttachShell); "" means /bin/sh.
	Shell string `json:"shell,omitempty"`
	// Scripts are installed as executable files /.msb/scripts/NAME, a
	// directory put first on PATH, so that Exec("NAME") runs them.
	Scripts map[string]string `json:"scripts,omitempty"`
	// RootDisk is the writable layer; nil means a managed disk of
	// DefaultRootDiskMiB.
	RootDisk *RootDisk `json:"root_disk,omitempty"`
	// LogLevel sets how much the guest kernel writes to the console log:
	// "trace", "debug", "info", "warn" (when ""), "error" or "off".
	LogLevel string `json:"log_level,omitempty"`
	// PullPolicy is "if-missing" (when ""), "always" or "never".
	PullPolicy string `json:"pull_policy,omitempty"`
	// Registry holds how to reach the image's registry. It is never
	// persisted: it may hold a password.
	Registry *Registry `json:"-"`
}

// Registry configures access to an image registry.
type Registry struct {
	// Username and Password are basic credentials; empty means the usual
	// auth files.
	Username, Password string
	// Insecure allows plain HTTP and unverified TLS.
	Insecure bool
	// CACertificates are extra PEM CA certificates to trust.
	CACertificates []byte
}

// kernelLogLevels maps Config.LogLevel to the guest kernel's console log
// level (loglevel=, after the VMM's "quiet").
var kernelLogLevels = map[string]int{"": 4, "warn": 4, "trace": 8, "debug": 8, "info": 7, "error": 3, "off": 1}

// reservedLabelPrefixes may not start a label key (upstream §1.2).
var reservedLabelPrefixes = []string{"sandbox.", "microsandbox.", "service."}

func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// validHostname reports an RFC 1123 host name of at most MaxHostnameLen
// bytes.
func validHostname(s string) bool {
	if s == "" || len(s) > MaxHostnameLen {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Validate reports every problem of c together, each wrapping
// ErrInvalidConfig.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	switch {
	case c.Name == "":
		bad("sandbox name is required")
	case len(c.Name) > MaxNameLen:
		bad("sandbox name must be at most %d characters: got %d", MaxNameLen, len(c.Name))
	case !validName(c.Name):
		bad("sandbox name %q: want an ASCII letter or digit, then letters, digits, '.', '_' or '-'", c.Name)
	}
	if c.Image == "" {
		bad("image source is required")
	}
	if c.MemoryMiB != 0 && c.MemoryMiB < MinMemoryMiB {
		bad("memory %d MiB: want at least %d", c.MemoryMiB, MinMemoryMiB)
	}
	if c.CPUs > MaxCPUs {
		bad("%d cpus: want at most %d", c.CPUs, MaxCPUs)
	}
	for k := range c.Env {
		switch {
		case k == "":
			bad("env key is empty")
		case strings.ContainsAny(k, "=\x00"):
			bad("env key %q contains '=' or NUL", k)
		case strings.HasPrefix(k, "MSB_"):
			bad("env key %q: the MSB_ prefix is reserved", k)
		}
		if strings.Contains(c.Env[k], "\x00") {
			bad("env %s: value contains NUL", k)
		}
	}
	if c.Workdir != "" && (!path.IsAbs(c.Workdir) || strings.Contains(c.Workdir, "\x00")) {
		bad("workdir %q is not an absolute path", c.Workdir)
	}
	if strings.ContainsAny(c.User, "\x00\n") {
		bad("user %q contains a control character", c.User)
	}
	if c.Hostname != "" && !validHostname(c.Hostname) {
		bad("hostname %q: want an RFC 1123 name of 1 to %d bytes", c.Hostname, MaxHostnameLen)
	}
	for k, v := range c.Labels {
		if k == "" {
			bad("label key is empty")
		}
		for _, p := range reservedLabelPrefixes {
			if strings.HasPrefix(k, p) {
				bad("label key %q: the %q prefix is reserved", k, p)
			}
		}
		if strings.ContainsAny(k+v, "\x00") {
			bad("label %q contains NUL", k)
		}
	}
	for _, a := range append(append([]string(nil), c.Entrypoint...), c.Cmd...) {
		if strings.Contains(a, "\x00") {
			bad("entrypoint or cmd argument %q contains NUL", a)
		}
	}
	if _, ok := kernelLogLevels[c.LogLevel]; !ok {
		bad("log level %q: want trace, debug, info, warn, error or off", c.LogLevel)
	}
	switch c.PullPolicy {
	case "", "if-missing", "always", "never":
	default:
		bad("pull policy %q: want always, if-missing or never", c.PullPolicy)
	}
	if c.MaxDuration < 0 {
		bad("max duration %v is negative", c.MaxDuration)
	}
	if c.IdleTimeout < 0 {
		bad("idle timeout %v is negative", c.IdleTimeout)
	}
	if err := c.Network.validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, validateMounts(c.Mounts)...)
	for name := range c.Scripts {
		if !validName(name) || len(name) > 255 {
			bad("script name %q: want a file name of letters, digits, '.', '_' or '-'", name)
		}
	}
	if err := c.RootDisk.validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, validatePatches(c.Patches)...)
	return errors.Join(errs...)
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.Hostname == "" {
		c.Hostname = HostnameFor(c.Name)
	}
	return c
}

// HostnameFor derives the guest host name from a sandbox name: the name
// itself when it is a valid host name, else the name with invalid bytes
// replaced by '-'; names over 64 bytes become a 54-byte prefix, '-' and 8
// hex digits of the name's SHA-256. (Upstream keeps 55 bytes, which can
// make a 64-byte label; RFC 1123 allows 63.)
func HostnameFor(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	h := string(b)
	if len(h) > MaxHostnameLen {
		sum := sha256.Sum256([]byte(name))
		h = h[:54] + "-" + hex.EncodeToString(sum[:4])
	}
	// Labels may not start or end with '-' nor be empty.
	labels := strings.Split(h, ".")
	out := labels[:0]
	for _, l := range labels {
		if l = strings.Trim(l, "-"); l != "" {
			out = append(out, l)
		}
	}
	if h = strings.Join(out, "."); h == "" || !validHostname(h) {
		return "sandbox"
	}
	return h
}
