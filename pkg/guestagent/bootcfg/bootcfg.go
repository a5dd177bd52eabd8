// SPDX-License-Identifier: Apache-2.0

package bootcfg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path"
	"strings"
)

// Path is where the configuration lies in the per-sandbox initramfs. The
// agent reads it before it leaves the initramfs; user processes, which run
// in the assembled root, never see it.
const Path = "/msb/boot.json"

// AgentPort is the vsock port the agent listens on; the host dials it at
// the guest's CID. It sits below 1024 so that only a privileged guest
// process may bind it (vsock_bind checks CAP_NET_BIND_SERVICE for ports up
// to LAST_RESERVED_PORT = 1023, linux/net/vmw_vsock/af_vsock.c), and the
// agent binds it before any user process runs.
const AgentPort uint32 = 1023

// Version is the schema version this package writes and reads.
const Version = 1

// Status is the byte the agent writes to the VMM's power-off switch
// (vmm.Exit.Status): zero for a requested power-off, otherwise why the agent
// gave up.
type Status uint8

// Power-off statuses.
const (
	// StatusOK: the agent powered off because it was asked to.
	StatusOK Status = 0
	// StatusBadConfig: Path was missing or failed Parse.
	StatusBadConfig Status = 1
	// StatusRootFailed: the root filesystem could not be assembled (lower,
	// upper, overlay or the switch into it).
	StatusRootFailed Status = 2
	// StatusSetupFailed: a step after the root failed (mounts, hostname,
	// /etc files, network).
	StatusSetupFailed Status = 3
	// StatusAgentFailed: the protocol server could not be started or kept
	// failing.
	StatusAgentFailed Status = 4
	// StatusInternal: the agent hit a bug (a recovered panic).
	StatusInternal Status = 5
	// StatusPatchFailed: a root filesystem patch (Config.Patches) could
	// not be applied; the console names it.
	StatusPatchFailed Status = 6
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusBadConfig:
		return "bad boot configuration"
	case StatusRootFailed:
		return "root filesystem assembly failed"
	case StatusSetupFailed:
		return "guest setup failed"
	case StatusAgentFailed:
		return "agent server failed"
	case StatusInternal:
		return "agent internal error"
	case StatusPatchFailed:
		return "root filesystem patch failed"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// ErrInvalid is matched by every validation error of Parse, Validate and
// Marshal.
var ErrInvalid = errors.New("bootcfg: invalid configuration")

// Defaults applied by Parse.
const (
	DefaultRootDevice = "/dev/vda"
	DefaultRootFSType = "erofs"
	DefaultHostname   = "sandbox"
	DefaultInterface  = "eth0"
	// DefaultTmpfsSize is the size option of the tmpfs upper and /tmp when
	// the configuration gives none: half the guest RAM, the kernel's own
	// tmpfs default written out (Documentation/filesystems/tmpfs.rst).
	DefaultTmpfsSize = "50%"
	// DefaultStopGraceMS is how long processes get between SIGTERM and
	// SIGKILL at shutdown.
	DefaultStopGraceMS = 2000
)

// Config is the per-boot configuration of a guest. It carries no secrets
// (see the package documentation). The zero value of each field means the
// default its comment names.
type Config struct {
	// Version is the schema version; zero means Version.
	Version int `json:"version,omitempty"`
	// Hostname is the guest's host name (RFC 1123, at most 64 bytes); ""
	// means DefaultHostname.
	Hostname string `json:"hostname,omitempty"`
	// Env is the base environment (KEY=VALUE) of every exec, under the
	// exec's own: the image's environment merged with the sandbox's. A
	// missing PATH gets the agent's default.
	Env []string `json:"env,omitempty"`
	// User is the image's default user ("name", "uid", "name:group" or
	// "uid:gid"); "" means root. The agent checks at boot that it resolves
	// in the root's /etc/passwd and reports on the console if not; the host
	// (pkg/sandbox) applies it to execs that name no user.
	User string `json:"user,omitempty"`
	// Workdir is the image's working directory; "" means "/". The agent
	// creates it in the root if it is missing; the host (pkg/sandbox)
	// applies it to execs that name no directory.
	Workdir string `json:"workdir,omitempty"`
	// Root describes the root filesystem.
	Root Root `json:"root"`
	// Mounts are mounted inside the assembled root, in order, after the
	// system mounts.
	Mounts []Mount `json:"mounts,omitempty"`
	// Hosts are extra /etc/hosts lines, after localhost and the hostname.
	Hosts []Host `json:"hosts,omitempty"`
	// Network configures a network interface; nil means only loopback.
	Network *Network `json:"network,omitempty"`
	// TmpSize is the size option of the /tmp tmpfs ("64m", "10%"); ""
	// means DefaultTmpfsSize.
	TmpSize string `json:"tmp_size,omitempty"`
	// StopGraceMS is how long processes get between SIGTERM and SIGKILL at
	// shutdown, in milliseconds; zero means DefaultStopGraceMS.
	StopGraceMS int `json:"stop_grace_ms,omitempty"`
	// Patches change the root filesystem before anything runs, in order
	// (see Patch); their payloads travel in PatchDir.
	Patches []Patch `json:"patches,omitempty"`
}

// Root is the root filesystem: a read-only lower image joined with a
// writable upper by overlayfs.
type Root struct {
	// Device is the block device holding the read-only image; "" means
	// DefaultRootDevice.
	Device string `json:"device,omitempty"`
	// FSType is the image's filesystem, "erofs" or "ext4"; "" means
	// DefaultRootFSType.
	FSType string `json:"fstype,omitempty"`
	// Upper is the writable layer.
	Upper Upper `json:"upper"`
}

// Upper is the root's writable layer: a tmpfs by default, or a disk the host
// formatted as ext4.
type Upper struct {
	// Device is a block device formatted ext4 by the host, holding the
	// upper and overlay work directories (created if missing); "" means a
	// tmpfs.
	Device string `json:"device,omitempty"`
	// Size is the tmpfs size option ("512m", "50%"); "" means
	// DefaultTmpfsSize. It must be empty with Device.
	Size string `json:"size,omitempty"`
}

// Mount is a filesystem mounted in the guest's root.
type Mount struct {
	// Source is the device or tag ("/dev/vdc", a virtiofs tag); ignored for
	// tmpfs.
	Source string `json:"source,omitempty"`
	// Target is the absolute mount point in the root, created if missing.
	// It may not be "/" nor lie under /proc, /sys or /dev.
	Target string `json:"target"`
	// FSType is one of ext4, erofs, squashfs, tmpfs, virtiofs, 9p.
	FSType string `json:"fstype"`
	// ReadOnly mounts it read-only.
	ReadOnly bool `json:"read_only,omitempty"`
	// Options are mount options: the flags nosuid, nodev, noexec, noatime,
	// relatime, and filesystem data such as "size=64m".
	Options []string `json:"options,omitempty"`
}

// Host is one /etc/hosts line.
type Host struct {
	IP    string   `json:"ip"`
	Names []string `json:"names"`
}

// Network configures one interface with static addresses and routes.
type Network struct {
	// Interface is the link name; "" means DefaultInterface.
	Interface string `json:"interface,omitempty"`
	// Addresses are the interface's addresses in CIDR form
	// ("10.0.2.15/24", "fd00::2/64").
	Addresses []string `json:"addresses,omitempty"`
	// Routes are added after the addresses, in order.
	Routes []Route `json:"routes,omitempty"`
	// MTU is the link MTU; zero leaves the driver's.
	MTU int `json:"mtu,omitempty"`
	// DNS are the nameserver addresses written to /etc/resolv.conf.
	DNS []string `json:"dns,omitempty"`
	// Search are the resolv.conf search domains.
	Search []string `json:"search,omitempty"`
}

// Route is a static route.
type Route struct {
	// Destination is a CIDR prefix or "default" (0.0.0.0/0, or ::/0 when
	// Gateway is IPv6).
	Destination string `json:"destination"`
	// Gateway is the next hop; "" means the destination is on-link.
	Gateway string `json:"gateway,omitempty"`
}

// Parse decodes and validates a configuration read from the initramfs and
// fills in the defaults. Unknown fields, trailing data and every problem
// Validate finds are errors matching ErrInvalid.
func Parse(b []byte) (*Config, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var c Config
	if err := d.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the object", ErrInvalid)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.applyDefaults()
	return &c, nil
}

// Marshal validates c and encodes it for Path.
func Marshal(c *Config) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	v := *c
	if v.Version == 0 {
		v.Version = Version
	}
	return json.MarshalIndent(&v, "", "  ")
}

func (c *Config) applyDefaults() {
	if c.Version == 0 {
		c.Version = Version
	}
	if c.Hostname == "" {
		c.Hostname = DefaultHostname
	}
	if c.Workdir == "" {
		c.Workdir = "/"
	}
	if c.Root.Device == "" {
		c.Root.Device = DefaultRootDevice
	}
	if c.Root.FSType == "" {
		c.Root.FSType = DefaultRootFSType
	}
	if c.Root.Upper.Device == "" && c.Root.Upper.Size == "" {
		c.Root.Upper.Size = DefaultTmpfsSize
	}
	if c.TmpSize == "" {
		c.TmpSize = DefaultTmpfsSize
	}
	if c.StopGraceMS == 0 {
		c.StopGraceMS = DefaultStopGraceMS
	}
	if n := c.Network; n != nil && n.Interface == "" {
		n.Interface = DefaultInterface
	}
}

// Validate reports every problem in c together, each matching ErrInvalid.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	if c.Version != 0 && c.Version != Version {
		bad("version %d, this agent reads %d", c.Version, Version)
	}
	if c.Hostname != "" && !validHostname(c.Hostname) {
		bad("hostname %q is not an RFC 1123 host name of at most 64 bytes", c.Hostname)
	}
	for i, kv := range c.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(kv, 0) {
			bad("env[%d] %q is not KEY=VALUE", i, kv)
		}
	}
	if strings.ContainsRune(c.User, 0) || strings.Count(c.User, ":") > 1 || strings.HasPrefix(c.User, ":") {
		bad("user %q is not name, uid, name:group or uid:gid", c.User)
	}
	if c.Workdir != "" && !absPath(c.Workdir) {
		bad("workdir %q is not a clean absolute path", c.Workdir)
	}
	if d := c.Root.Device; d != "" && !devPath(d) {
		bad("root.device %q is not a /dev path", d)
	}
	switch c.Root.FSType {
	case "", "erofs", "ext4":
	default:
		bad("root.fstype %q, want erofs or ext4", c.Root.FSType)
	}
	if u := c.Root.Upper; u.Device != "" {
		if !devPath(u.Device) {
			bad("root.upper.device %q is not a /dev path", u.Device)
		}
		if u.Device == c.Root.Device || (c.Root.Device == "" && u.Device == DefaultRootDevice) {
			bad("root.upper.device %q is the root image's device", u.Device)
		}
		if u.Size != "" {
			bad("root.upper.size is for a tmpfs upper, not with device %q", u.Device)
		}
	} else if u.Size != "" && !validSize(u.Size) {
		bad("root.upper.size %q, want a tmpfs size such as 512m or 50%%", u.Size)
	}
	if c.TmpSize != "" && !validSize(c.TmpSize) {
		bad("tmp_size %q, want a tmpfs size such as 64m or 25%%", c.TmpSize)
	}
	if c.StopGraceMS < 0 || c.StopGraceMS > 600_000 {
		bad("stop_grace_ms %d out of range 0-600000", c.StopGraceMS)
	}
	for i, m := range c.Mounts {
		errs = append(errs, validateMount(i, m)...)
	}
	for i, h := range c.Hosts {
		if _, err := netip.ParseAddr(h.IP); err != nil {
			bad("hosts[%d].ip %q: %v", i, h.IP, err)
		}
		if len(h.Names) == 0 {
			bad("hosts[%d] has no names", i)
		}
		for _, n := range h.Names {
			if !validHostname(n) {
				bad("hosts[%d] name %q is not a host name", i, n)
			}
		}
	}
	if n := c.Network; n != nil {
		errs = append(errs, validateNetwork(n)...)
	}
	data := map[string]bool{}
	for i, p := range c.Patches {
		errs = append(errs, validatePatch(i, p)...)
		if p.Data != "" && data[p.Data] {
			bad("patches[%d]: data %q is used twice", i, p.Data)
		}
		data[p.Data] = true
	}
	return errors.Join(errs...)
}

// mountFSTypes are the filesystems a Mount may name: those the guest kernel
// builds in (kernel/microvm.fragment).
var mountFSTypes = map[string]bool{
	"ext4": true, "erofs": true, "squashfs": true, "tmpfs": true, "virtiofs": true, "9p": true,
}

// MountFlags are the Mount options that are flags rather than filesystem
// data.
var MountFlags = []string{"nosuid", "nodev", "noexec", "noatime", "relatime"}

func validateMount(i int, m Mount) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: mounts[%d]: "+format, append([]any{ErrInvalid, i}, args...)...))
	}
	if !absPath(m.Target) || m.Target == "/" {
		bad("target %q is not a clean absolute path other than /", m.Target)
	} else {
		for _, sys := range []string{"/proc", "/sys", "/dev"} {
			if m.Target == sys || strings.HasPrefix(m.Target, sys+"/") {
				bad("target %q lies in the system mount %s", m.Target, sys)
			}
		}
	}
	if !mountFSTypes[m.FSType] {
		bad("fstype %q, want one of ext4, erofs, squashfs, tmpfs, virtiofs, 9p", m.FSType)
	}
	if m.FSType != "tmpfs" && (m.Source == "" || strings.ContainsAny(m.Source, "\x00,")) {
		bad("source %q: want a device or tag", m.Source)
	}
	for _, o := range m.Options {
		if o == "" || strings.ContainsAny(o, "\x00,") {
			bad("option %q: want one option without commas", o)
		}
	}
	return errs
}

func validateNetwork(n *Network) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: network: "+format, append([]any{ErrInvalid}, args...)...))
	}
	if n.Interface != "" && (len(n.Interface) > 15 || strings.ContainsAny(n.Interface, "/ \x00:")) {
		bad("interface %q is not a link name", n.Interface)
	}
	for _, a := range n.Addresses {
		if p, err := netip.ParsePrefix(a); err != nil {
			bad("address %q: %v", a, err)
		} else if p.Addr().Zone() != "" {
			bad("address %q has a zone", a)
		}
	}
	for i, r := range n.Routes {
		if _, err := RouteDestination(r); err != nil {
			bad("routes[%d]: %v", i, err)
		}
	}
	if n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535) {
		// 68: the IPv4 minimum (RFC 791); 65535: the largest IP packet.
		bad("mtu %d out of range 68-65535", n.MTU)
	}
	for _, d := range n.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			bad("dns %q: %v", d, err)
		}
	}
	for _, s := range n.Search {
		if !validHostname(s) {
			bad("search domain %q is not a domain name", s)
		}
	}
	return errs
}

// RouteDestination returns r's destination prefix, resolving "default" by
// the gateway's family, and checks that the gateway, if any, is of the
// same family.
func RouteDestination(r Route) (netip.Prefix, error) {
	var gw netip.Addr
	if r.Gateway != "" {
		var err error
		if gw, err = netip.ParseAddr(r.Gateway); err != nil {
			return netip.Prefix{}, fmt.Errorf("gateway %q: %v", r.Gateway, err)
		}
	}
	var dst netip.Prefix
	if r.Destination == "default" {
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		} else {
			dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
		if !gw.IsValid() {
			return netip.Prefix{}, errors.New("default route without a gateway")
		}
	} else {
		p, err := netip.ParsePrefix(r.Destination)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("destination %q: %v", r.Destination, err)
		}
		dst = p.Masked()
	}
	if gw.IsValid() && gw.Is4() != dst.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("gateway %s and destination %s differ in family", gw, dst)
	}
	return dst, nil
}

// validHostname accepts RFC 1123 names: dot-separated labels of letters,
// digits and hyphens, not starting or ending with a hyphen, at most 64
// bytes in all (HOST_NAME_MAX, linux/limits.h).
func validHostname(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func absPath(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.ContainsRune(p, 0)
}

func devPath(p string) bool {
	return absPath(p) && strings.HasPrefix(p, "/dev/") && !strings.Contains(p, "/..")
}

// validSize accepts a tmpfs size option: a number with an optional k, m or g
// suffix, or a percentage of RAM from 1 to 100 (tmpfs.rst).
func validSize(s string) bool {
	if num, ok := strings.CutSuffix(s, "%"); ok {
		n, err := atoiPositive(num)
		return err == nil && n >= 1 && n <= 100
	}
	num := strings.TrimRight(s, "kmgKMG")
	if len(s)-len(num) > 1 {
		return false
	}
	n, err := atoiPositive(num)
	return err == nil && n > 0
}

func atoiPositive(s string) (int, error) {
	if s == "" || len(s) > 12 {
		return 0, errors.New("bad number")
	}
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, errors.New("bad number")
		}
		n = n*10 + int(r-'0')
	}
	return n, nil
}
