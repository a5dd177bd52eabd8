// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// MountKind is the kind of a MountConfig (1-based, as upstream).
type MountKind uint8

// Mount kinds.
const (
	MountKindBind MountKind = iota + 1
	MountKindNamed
	MountKindTmpfs
	MountKindDisk
)

// MountOptions tunes bind and named mounts.
type MountOptions struct {
	Readonly, Noexec, Nosuid, Nodev bool
	// StatVirtualization and HostPermissions are accepted for upstream
	// compatibility; only their defaults ("", strict; "", private) are
	// supported.
	StatVirtualization string
	HostPermissions    string
	// QuotaMiB limits what the guest may store in a bind mount; zero
	// means no limit (upstream defaults to 4096).
	QuotaMiB uint32
}

// NamedVolumeOptions say how a named mount treats its volume.
type NamedVolumeOptions struct {
	// Mode is "existing" (the default: the volume must exist), "create"
	// (it must not; it is made) or "ensure-exists".
	Mode string
	// Kind is the kind of a volume the mount creates ("" or "dir").
	Kind VolumeKind
	// SizeMiB is for disk volumes (unsupported).
	SizeMiB uint32
	// QuotaMiB is the quota of a volume the mount creates.
	QuotaMiB uint32
}

// TmpfsOptions configures a tmpfs mount.
type TmpfsOptions struct {
	// SizeMiB limits it (writes beyond fail with ENOSPC); zero means
	// half the guest memory.
	SizeMiB                         uint32
	Readonly, Noexec, Nosuid, Nodev bool
}

// DiskOptions configures a disk image mount.
type DiskOptions struct {
	// Format is "raw" or "qcow2"; empty means the file name decides
	// (.qcow2), else raw. vmdk is not supported. A qcow2 image must stand
	// alone: no backing file, encryption or external data file.
	Format string
	// Fstype is the image's file system: "ext4" (when ""), "erofs" or
	// "squashfs".
	Fstype                          string
	Readonly, Noexec, Nosuid, Nodev bool
}

// MountConfig is one guest mount. Build it with Mount.
type MountConfig struct {
	kind   MountKind
	source string
	opts   MountOptions
	named  NamedVolumeOptions
	tmpfs  TmpfsOptions
	disk   DiskOptions
}

// Kind returns the mount's kind.
func (m MountConfig) Kind() MountKind { return m.kind }

type mountFactory struct{}

// Mount builds mount configurations for WithMounts.
var Mount mountFactory

// Bind shares the host directory hostPath (relative paths are resolved
// against the current directory at CreateSandbox). Read-only is enforced
// by the host.
func (mountFactory) Bind(hostPath string, o MountOptions) MountConfig {
	return MountConfig{kind: MountKindBind, source: hostPath, opts: o}
}

// Named shares the named volume, which must exist.
func (mountFactory) Named(name string, o MountOptions) MountConfig {
	return MountConfig{kind: MountKindNamed, source: name, opts: o}
}

// NamedWith shares the named volume, creating it as n says.
func (mountFactory) NamedWith(name string, o MountOptions, n NamedVolumeOptions) MountConfig {
	return MountConfig{kind: MountKindNamed, source: name, opts: o, named: n}
}

// Tmpfs is a guest tmpfs.
func (mountFactory) Tmpfs(o TmpfsOptions) MountConfig {
	return MountConfig{kind: MountKindTmpfs, tmpfs: o}
}

// Disk attaches the disk image (raw or qcow2) at hostPath as a block device and
// mounts its file system (relative paths are resolved at CreateSandbox).
// Read-only is enforced by the host's block device.
func (mountFactory) Disk(hostPath string, o DiskOptions) MountConfig {
	return MountConfig{kind: MountKindDisk, source: hostPath, disk: o}
}

// WithMounts adds mounts by guest path; repeated calls merge, later paths
// win.
func WithMounts(mounts map[string]MountConfig) SandboxOption {
	return func(c *SandboxConfig) {
		if c.Volumes == nil {
			c.Volumes = map[string]MountConfig{}
		}
		for k, v := range mounts {
			c.Volumes[k] = v
		}
	}
}

func flags(noexec, nosuid, nodev bool) []string {
	var out []string
	if noexec {
		out = append(out, "noexec")
	}
	if nosuid {
		out = append(out, "nosuid")
	}
	if nodev {
		out = append(out, "nodev")
	}
	return out
}

// sandboxMounts converts the mounts, in guest-path order (parents first).
func sandboxMounts(vols map[string]MountConfig) ([]sandbox.Mount, error) {
	paths := make([]string, 0, len(vols))
	for p := range vols {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out []sandbox.Mount
	var errs []error
	for _, p := range paths {
		m := vols[p]
		if strings.ContainsAny(p, ":;") {
			errs = append(errs, fmt.Errorf("mount point %q contains ':' or ';'", p))
		}
		switch m.kind {
		case MountKindBind, MountKindNamed:
			o := m.opts
			if (o.StatVirtualization != "" && o.StatVirtualization != "strict") || (o.HostPermissions != "" && o.HostPermissions != "private") {
				errs = append(errs, fmt.Errorf("mount at %s: stat virtualization %q / host permissions %q are not supported", p, o.StatVirtualization, o.HostPermissions))
			}
			sm := sandbox.Mount{Guest: p, Source: m.source, ReadOnly: o.Readonly, QuotaMiB: o.QuotaMiB, Options: flags(o.Noexec, o.Nosuid, o.Nodev)}
			if m.kind == MountKindBind {
				sm.Kind = sandbox.MountBind
			} else {
				sm.Kind, sm.Create = sandbox.MountNamed, m.named.Mode
				sm.VolumeKind, sm.VolumeSizeMiB, sm.VolumeQuotaMiB = string(m.named.Kind), m.named.SizeMiB, m.named.QuotaMiB
				if m.named.Kind != "" && m.named.Kind != VolumeKindDir && m.named.Kind != VolumeKindDisk {
					errs = append(errs, fmt.Errorf("mount at %s: volume kind %q: want dir or disk", p, m.named.Kind))
				}
			}
			out = append(out, sm)
		case MountKindTmpfs:
			t := m.tmpfs
			out = append(out, sandbox.Mount{Guest: p, Kind: sandbox.MountTmpfs, ReadOnly: t.Readonly, SizeMiB: t.SizeMiB, Options: flags(t.Noexec, t.Nosuid, t.Nodev)})
		case MountKindDisk:
			d := m.disk
			sm := sandbox.Mount{Guest: p, Kind: sandbox.MountDisk, Source: m.source, Format: strings.ToLower(d.Format), FSType: d.Fstype, ReadOnly: d.Readonly, Options: flags(d.Noexec, d.Nosuid, d.Nodev)}
			if _, err := sandbox.DiskFormat(sm); err != nil {
				errs = append(errs, err)
			}
			out = append(out, sm)
		default:
			errs = append(errs, fmt.Errorf("mount at %s: kind %d is not supported", p, m.kind))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, &Error{Kind: ErrInvalidConfig, Message: "invalid config: " + err.Error(), Cause: err}
	}
	return out, nil
}

// VolumeKind is a volume's kind.
type VolumeKind string

// Volume kinds: a host directory shared with the guest, or an ext4 image
// the guest mounts as a block device (faster, sized, host sees the image).
const (
	VolumeKindDir  VolumeKind = "dir"
	VolumeKindDisk VolumeKind = "disk"
)

// VolumeOption configures CreateVolume.
type VolumeOption func(*volumeOptions)

type volumeOptions struct {
	kind   VolumeKind
	size   uint32
	quota  uint32
	labels map[string]string
}

// WithVolumeKind sets the kind: VolumeKindDir (default) or VolumeKindDisk.
func WithVolumeKind(k VolumeKind) VolumeOption { return func(o *volumeOptions) { o.kind = k } }

// WithVolumeSize is the size of a disk volume in MiB (at least 8); for a
// disk volume WithVolumeQuota means the same.
func WithVolumeSize(mib uint32) VolumeOption { return func(o *volumeOptions) { o.size = mib } }

// WithVolumeQuota limits the volume's content: guest writes beyond it fail
// with ENOSPC. Zero means unlimited.
func WithVolumeQuota(mib uint32) VolumeOption { return func(o *volumeOptions) { o.quota = mib } }

// WithVolumeLabels merges labels.
func WithVolumeLabels(labels map[string]string) VolumeOption {
	return func(o *volumeOptions) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		for k, v := range labels {
			o.labels[k] = v
		}
	}
}

// Volume is a named volume: a host directory sandboxes mount by name.
type Volume struct {
	v *sandbox.Volume
}

// CreateVolume creates a named volume; an existing name is
// ErrVolumeAlreadyExists.
func CreateVolume(ctx context.Context, name string, opts ...VolumeOption) (*Volume, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var o volumeOptions
	for _, f := range opts {
		f(&o)
	}
	v, err := sandbox.CreateVolume(sandbox.DefaultRuntime(), sandbox.Volume{Name: name, Kind: string(o.kind), SizeMiB: o.size, QuotaMiB: o.quota, Labels: o.labels})
	if err != nil {
		return nil, wrap(err)
	}
	return &Volume{v: v}, nil
}

// Name returns the volume's name.
func (v *Volume) Name() string { return v.v.Name }

// Path returns the host directory holding the volume's files (a disk
// volume: its image).
func (v *Volume) Path() string { return v.v.Path }

// FS returns host-side file operations on the volume; on a disk volume
// they fail with ErrUnsupportedOperation.
func (v *Volume) FS() *VolumeFs { return &VolumeFs{root: v.v.Path, disk: v.v.IsDisk()} }

// Remove removes the volume (see RemoveVolume).
func (v *Volume) Remove(ctx context.Context) error { return RemoveVolume(ctx, v.v.Name) }

// VolumeHandle describes a named volume.
type VolumeHandle struct {
	v *sandbox.Volume
}

// GetVolume looks up a named volume.
func GetVolume(ctx context.Context, name string) (*VolumeHandle, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	v, err := sandbox.GetVolume(sandbox.DefaultRuntime(), name)
	if err != nil {
		return nil, wrap(err)
	}
	return &VolumeHandle{v: v}, nil
}

// GetDefaultVolume is a cloud feature: ErrUnsupportedOperation.
func GetDefaultVolume(ctx context.Context) (*VolumeHandle, error) {
	return nil, &Error{Kind: ErrUnsupportedOperation, Message: "the default volume exists only on the cloud backend"}
}

// ListVolumes returns every volume, by name.
func ListVolumes(ctx context.Context) ([]*VolumeHandle, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	vs, err := sandbox.ListVolumes(sandbox.DefaultRuntime())
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]*VolumeHandle, 0, len(vs))
	for _, v := range vs {
		out = append(out, &VolumeHandle{v: v})
	}
	return out, nil
}

// RemoveVolume deletes a volume and its files; one a running sandbox
// mounts is ErrInvalidConfig.
func RemoveVolume(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return wrap(sandbox.RemoveVolume(sandbox.DefaultRuntime(), name))
}

// Name returns the volume's name.
func (h *VolumeHandle) Name() string { return h.v.Name }

// IsDefault is false: local volumes are never the cloud default.
func (h *VolumeHandle) IsDefault() bool { return false }

// Path returns the host directory holding the volume's files.
func (h *VolumeHandle) Path() string { return h.v.Path }

// Kind returns VolumeKindDir or VolumeKindDisk.
func (h *VolumeHandle) Kind() VolumeKind {
	if h.v.IsDisk() {
		return VolumeKindDisk
	}
	return VolumeKindDir
}

// DiskFormat returns "raw" for a disk volume, nil for a directory.
func (h *VolumeHandle) DiskFormat() *string {
	if !h.v.IsDisk() {
		return nil
	}
	f := "raw"
	return &f
}

// DiskFstype returns "ext4" for a disk volume, nil for a directory.
func (h *VolumeHandle) DiskFstype() *string {
	if !h.v.IsDisk() {
		return nil
	}
	f := "ext4"
	return &f
}

// QuotaMiB returns the quota (a disk volume's size), nil when unlimited.
func (h *VolumeHandle) QuotaMiB() *uint32 {
	q := h.v.QuotaMiB
	if h.v.IsDisk() {
		q = h.v.SizeMiB
	}
	if q == 0 {
		return nil
	}
	return &q
}

// UsedBytes sums the sizes of the volume's regular files; for a disk
// volume, the host space its sparse image takes.
func (h *VolumeHandle) UsedBytes() uint64 {
	if h.v.IsDisk() {
		var st syscall.Stat_t
		if syscall.Stat(h.v.Path, &st) != nil {
			return 0
		}
		return uint64(st.Blocks) * 512
	}
	var n uint64
	filepath.WalkDir(h.v.Path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += uint64(fi.Size())
			}
		}
		return nil
	})
	return n
}

// CapacityBytes returns the quota (a disk volume's size) in bytes, nil
// when unlimited.
func (h *VolumeHandle) CapacityBytes() *uint64 {
	q := h.QuotaMiB()
	if q == nil {
		return nil
	}
	c := uint64(*q) << 20
	return &c
}

// Labels returns the volume's labels.
func (h *VolumeHandle) Labels() map[string]string {
	out := map[string]string{}
	for k, v := range h.v.Labels {
		out[k] = v
	}
	return out
}

// CreatedAt returns the creation time.
func (h *VolumeHandle) CreatedAt() time.Time { return h.v.Created }

// FS returns host-side file operations on the volume.
func (h *VolumeHandle) FS() *VolumeFs { return &VolumeFs{root: h.v.Path} }

// Remove removes the volume (see RemoveVolume).
func (h *VolumeHandle) Remove(ctx context.Context) error { return RemoveVolume(ctx, h.v.Name) }

// VolumeFs reads and writes a volume's files from the host. Paths are
// relative to the volume; absolute paths, ".." and symbolic links that
// leave the volume fail with ErrPathEscape (os.Root confines every access).
type VolumeFs struct {
	root string
	disk bool // a disk volume: its files live inside an image
}

// Root returns the volume's host directory.
func (f *VolumeFs) Root() string { return f.root }

func (f *VolumeFs) open(rel string) (*os.Root, string, error) {
	if f.disk {
		return nil, "", &Error{Kind: ErrUnsupportedOperation, Message: "volume: the files of a disk volume live inside its ext4 image (" + f.root + "); reach them from a sandbox that mounts it"}
	}
	if rel == "" || filepath.IsAbs(rel) || !filepath.IsLocal(rel) {
		return nil, "", fmt.Errorf("%w: %q", ErrPathEscape, rel)
	}
	r, err := os.OpenRoot(f.root)
	if err != nil {
		return nil, "", &Error{Kind: ErrIO, Message: "volume: " + err.Error(), Cause: err}
	}
	return r, filepath.Clean(rel), nil
}

func volErr(op, rel string, err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "path escapes from parent") {
		return fmt.Errorf("%w: %s %q: %v", ErrPathEscape, op, rel, err)
	}
	kind := ErrIO
	if errors.Is(err, fs.ErrNotExist) {
		kind = ErrPathNotFound
	}
	return &Error{Kind: kind, Message: fmt.Sprintf("volume %s %s: %v", op, rel, err), Cause: err}
}

// in runs fn on the volume's root with rel checked and cleaned.
func (f *VolumeFs) in(ctx context.Context, rel string, fn func(r *os.Root, p string) error) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	r, p, err := f.open(rel)
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r, p)
}

// Read returns a file's content.
func (f *VolumeFs) Read(ctx context.Context, rel string) ([]byte, error) {
	var b []byte
	err := f.in(ctx, rel, func(r *os.Root, p string) (err error) {
		b, err = r.ReadFile(p)
		return volErr("read", rel, err)
	})
	return b, err
}

// ReadString returns a file's content as a string.
func (f *VolumeFs) ReadString(ctx context.Context, rel string) (string, error) {
	b, err := f.Read(ctx, rel)
	return string(b), err
}

// Write creates or truncates a file (mode 0644) and writes data.
func (f *VolumeFs) Write(ctx context.Context, rel string, data []byte) error {
	return f.in(ctx, rel, func(r *os.Root, p string) error {
		return volErr("write", rel, r.WriteFile(p, data, 0o644))
	})
}

// WriteString is Write of a string.
func (f *VolumeFs) WriteString(ctx context.Context, rel, data string) error {
	return f.Write(ctx, rel, []byte(data))
}

// Mkdir creates a directory and its parents (0755).
func (f *VolumeFs) Mkdir(ctx context.Context, rel string) error {
	return f.in(ctx, rel, func(r *os.Root, p string) error {
		return volErr("mkdir", rel, r.MkdirAll(p, 0o755))
	})
}

// Remove removes a file or an empty directory.
func (f *VolumeFs) Remove(ctx context.Context, rel string) error {
	return f.in(ctx, rel, func(r *os.Root, p string) error {
		return volErr("remove", rel, r.Remove(p))
	})
}

// RemoveAll removes a path and everything below it.
func (f *VolumeFs) RemoveAll(ctx context.Context, rel string) error {
	return f.in(ctx, rel, func(r *os.Root, p string) error {
		return volErr("remove", rel, r.RemoveAll(p))
	})
}

// Exists reports whether a path exists (symbolic links not followed).
func (f *VolumeFs) Exists(ctx context.Context, rel string) (bool, error) {
	exists := false
	err := f.in(ctx, rel, func(r *os.Root, p string) error {
		_, err := r.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		exists = err == nil
		return volErr("stat", rel, err)
	})
	return exists, err
}
