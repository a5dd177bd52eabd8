// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/diskimage/qcow2"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/rootfs/ext4fmt"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
)

// Error classes of volumes.
var (
	// ErrVolumeNotFound: no volume of that name.
	ErrVolumeNotFound = errors.New("sandbox: volume not found")
	// ErrVolumeExists: a volume of that name exists.
	ErrVolumeExists = errors.New("sandbox: volume already exists")
	// ErrVolumeInUse: a running sandbox mounts the volume.
	ErrVolumeInUse = errors.New("sandbox: volume in use")
)

// Mount kinds.
const (
	// MountBind shares a host directory.
	MountBind = "bind"
	// MountNamed shares a named volume's directory (see Mount.Create).
	MountNamed = "named"
	// MountTmpfs is a guest tmpfs.
	MountTmpfs = "tmpfs"
	// MountDisk attaches a host disk image (raw) as a block device and
	// mounts its file system.
	MountDisk = "disk"
)

// diskFSTypes are the file systems a disk mount may hold.
var diskFSTypes = map[string]bool{"ext4": true, "erofs": true, "squashfs": true}

// disk is one extra block device of the sandbox process.
type disk struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Format is DiskRaw or DiskQCOW2.
	Format string `json:"format,omitempty"`
}

// Disk image formats of disk mounts.
const (
	DiskRaw   = "raw"
	DiskQCOW2 = "qcow2"
)

// diskFormat returns the format of a disk mount: Format, or when empty the
// one its file name says (.qcow2; vmdk is refused; anything else is raw).
func DiskFormat(m Mount) (string, error) {
	f := m.Format
	if f == "" {
		switch strings.ToLower(filepath.Ext(m.Source)) {
		case ".qcow2":
			f = DiskQCOW2
		case ".vmdk":
			f = "vmdk"
		default:
			f = DiskRaw
		}
	}
	switch f {
	case DiskRaw, DiskQCOW2:
		return f, nil
	}
	return "", fmt.Errorf("disk mount at %s: format %q is not supported (raw or qcow2; convert with qemu-img convert -O qcow2)", m.Guest, f)
}

// Mount is a file system mounted in the guest at Guest.
type Mount struct {
	// Guest is the absolute mount point in the guest; not "/", not in
	// /proc, /sys or /dev.
	Guest string `json:"guest"`
	// Kind is MountBind, MountNamed or MountTmpfs.
	Kind string `json:"kind"`
	// Source is the host directory (bind; absolute once Create ran) or
	// the volume name (named).
	Source string `json:"source,omitempty"`
	// ReadOnly mounts it read-only; for shares the host enforces it.
	ReadOnly bool `json:"read_only,omitempty"`
	// SizeMiB limits a tmpfs (zero: half the guest memory).
	SizeMiB uint32 `json:"size_mib,omitempty"`
	// QuotaMiB limits what the guest may write into a bind share; zero
	// means no limit. A named volume's quota is the volume's.
	QuotaMiB uint32 `json:"quota_mib,omitempty"`
	// Options are extra guest mount flags: nosuid, nodev, noexec,
	// noatime, relatime.
	Options []string `json:"options,omitempty"`
	// FSType is a disk mount's file system: "ext4" (when ""), "erofs" or
	// "squashfs".
	FSType string `json:"fstype,omitempty"`
	// Format is a disk mount's image format: DiskRaw or DiskQCOW2; empty
	// means the file name's extension decides (.qcow2), else raw.
	Format string `json:"format,omitempty"`
	// Create says what a named mount does about its volume: "existing"
	// (when "": it must exist), "create" (it must not; it is made) or
	// "ensure-exists" (made when missing).
	Create string `json:"create,omitempty"`
	// VolumeKind, VolumeSizeMiB and VolumeQuotaMiB describe the volume a
	// named mount creates (see Volume).
	VolumeKind     string `json:"volume_kind,omitempty"`
	VolumeSizeMiB  uint32 `json:"volume_size_mib,omitempty"`
	VolumeQuotaMiB uint32 `json:"volume_quota_mib,omitempty"`
}

// share is one virtio-fs device of the sandbox process.
type share struct {
	Tag        string `json:"tag"`
	Root       string `json:"root"`
	ReadOnly   bool   `json:"read_only,omitempty"`
	QuotaBytes uint64 `json:"quota_bytes,omitempty"`
}

var mountFlags = map[string]bool{"nosuid": true, "nodev": true, "noexec": true, "noatime": true, "relatime": true}

func validateMounts(ms []Mount) []error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if !bootcfg.ValidPatchPath(m.Guest) {
			bad("mount point %q: want an absolute, clean path, not / and not in /proc, /sys or /dev", m.Guest)
		}
		if seen[m.Guest] {
			bad("mount point %q used twice", m.Guest)
		}
		seen[m.Guest] = true
		switch m.Kind {
		case MountBind:
			if m.Source == "" {
				bad("bind mount at %s: no host path", m.Guest)
			}
		case MountNamed:
			if !validName(m.Source) {
				bad("named mount at %s: volume name %q: want a letter or digit, then letters, digits, '.', '_' or '-'", m.Guest, m.Source)
			}
			switch m.Create {
			case "", "existing", "create", "ensure-exists":
			default:
				bad("named mount at %s: mode %q: want existing, create or ensure-exists", m.Guest, m.Create)
			}
		case MountTmpfs:
		case MountDisk:
			if m.Source == "" {
				bad("disk mount at %s: no image path", m.Guest)
			}
			if m.FSType != "" && !diskFSTypes[m.FSType] {
				bad("disk mount at %s: file system %q: want ext4, erofs or squashfs", m.Guest, m.FSType)
			}
			if _, err := DiskFormat(m); err != nil {
				errs = append(errs, err)
			}
		default:
			bad("mount at %s: kind %q: want bind, named, tmpfs or disk", m.Guest, m.Kind)
		}
		for _, o := range m.Options {
			if !mountFlags[o] {
				bad("mount at %s: option %q: want nosuid, nodev, noexec, noatime or relatime", m.Guest, o)
			}
		}
	}
	return errs
}

// Volume kinds.
const (
	// VolumeDir is a host directory shared with the guest (virtio-fs).
	VolumeDir = "dir"
	// VolumeDisk is an ext4 file system in a raw image the guest mounts
	// as a block device: the guest's own file system, at block-device
	// speed, with the image size as the hard limit; the host sees only
	// the image.
	VolumeDisk = "disk"
)

// Volume is a named volume's record (volume.json).
type Volume struct {
	Name string `json:"name"`
	// Kind is VolumeDir (when "") or VolumeDisk.
	Kind string `json:"kind,omitempty"`
	// SizeMiB is a disk volume's size.
	SizeMiB uint32 `json:"size_mib,omitempty"`
	// QuotaMiB limits a directory volume's content; zero means no limit.
	QuotaMiB uint32            `json:"quota_mib,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Created  time.Time         `json:"created"`
	// Path is the host directory holding a directory volume's files, or
	// a disk volume's image.
	Path string `json:"-"`
}

// IsDisk reports whether v is a disk volume.
func (v *Volume) IsDisk() bool { return v.Kind == VolumeDisk }

// dataPath is where the volume's content lives: the data directory, or
// the image of a disk volume.
func (v *Volume) dataPath(dir string) string {
	if v.IsDisk() {
		return filepath.Join(dir, volumeImage)
	}
	return filepath.Join(dir, volumeDataDir)
}

func (rt *Runtime) volumesDir() string           { return filepath.Join(rt.Home, "volumes") }
func (rt *Runtime) volumeDir(name string) string { return filepath.Join(rt.volumesDir(), name) }

const (
	volumeFile    = "volume.json"
	volumeDataDir = "data"
	volumeImage   = "disk.ext4"
)

// CreateVolume creates the named volume. An existing one is
// ErrVolumeExists.
func CreateVolume(rt Runtime, v Volume) (*Volume, error) {
	rt.abs()
	if !validName(v.Name) {
		return nil, fmt.Errorf("%w: volume name %q: want a letter or digit, then letters, digits, '.', '_' or '-'", ErrInvalidConfig, v.Name)
	}
	for k := range v.Labels {
		if k == "" {
			return nil, fmt.Errorf("%w: volume label key is empty", ErrInvalidConfig)
		}
	}
	switch v.Kind {
	case "", VolumeDir:
		v.Kind = ""
		if v.SizeMiB != 0 {
			return nil, fmt.Errorf("%w: volume %s: a size is for disk volumes; a directory volume takes a quota", ErrInvalidConfig, v.Name)
		}
	case VolumeDisk:
		if v.SizeMiB == 0 {
			v.SizeMiB, v.QuotaMiB = v.QuotaMiB, 0 // the quota of a disk is its size
		}
		if v.QuotaMiB != 0 || v.SizeMiB < minDiskVolumeMiB {
			return nil, fmt.Errorf("%w: disk volume %s: give a size of at least %d MiB (and no separate quota: the size is the limit)", ErrInvalidConfig, v.Name, minDiskVolumeMiB)
		}
	default:
		return nil, fmt.Errorf("%w: volume %s: kind %q: want dir or disk", ErrInvalidConfig, v.Name, v.Kind)
	}
	if err := os.MkdirAll(rt.volumesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: create volume: %w", err)
	}
	dir := rt.volumeDir(v.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: volume already exists: %s", ErrVolumeExists, v.Name)
		}
		return nil, fmt.Errorf("sandbox: create volume: %w", err)
	}
	if v.IsDisk() {
		// Sparse: only what the guest writes takes host space.
		label := v.Name[:min(len(v.Name), ext4fmt.MaxLabelLen)]
		if err := ext4fmt.FormatFile(v.dataPath(dir), int64(v.SizeMiB)<<20, ext4fmt.Options{Label: label}); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("sandbox: create disk volume %s: %w", v.Name, err)
		}
	} else if err := os.Mkdir(v.dataPath(dir), 0o755); err != nil {
		// The data directory is what the guest sees as its root: 0755,
		// so that unprivileged guest users can enter it.
		os.RemoveAll(dir)
		return nil, fmt.Errorf("sandbox: create volume: %w", err)
	}
	v.Created = time.Now().UTC()
	b, _ := json.MarshalIndent(&v, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, volumeFile), append(b, '\n')); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	v.Path = v.dataPath(dir)
	return &v, nil
}

// minDiskVolumeMiB is the smallest disk volume: room for ext4's metadata
// and a journal-less file system that is still useful.
const minDiskVolumeMiB = 8

// GetVolume reads the named volume's record.
func GetVolume(rt Runtime, name string) (*Volume, error) {
	rt.abs()
	if !validName(name) {
		return nil, fmt.Errorf("%w: %s", ErrVolumeNotFound, name)
	}
	dir := rt.volumeDir(name)
	b, err := os.ReadFile(filepath.Join(dir, volumeFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrVolumeNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: volume %s: %w", name, err)
	}
	var v Volume
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("sandbox: volume %s: %w", name, err)
	}
	v.Path = v.dataPath(dir)
	return &v, nil
}

// ListVolumes returns every volume, by name.
func ListVolumes(rt Runtime) ([]*Volume, error) {
	rt.abs()
	ents, err := os.ReadDir(rt.volumesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: list volumes: %w", err)
	}
	var out []*Volume
	for _, e := range ents {
		if v, err := GetVolume(rt, e.Name()); err == nil {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveVolume deletes the named volume and its files. A volume a running
// sandbox mounts is ErrVolumeInUse.
func RemoveVolume(rt Runtime, name string) error {
	rt.abs()
	if _, err := GetVolume(rt, name); err != nil {
		return err
	}
	sbs, err := List(rt)
	if err != nil {
		return err
	}
	for _, st := range sbs {
		if st.Status.Terminal() {
			continue
		}
		for _, m := range st.Config.Mounts {
			if m.Kind == MountNamed && m.Source == name {
				return fmt.Errorf("%w: volume %s is mounted by running sandbox %s at %s; stop it first", ErrVolumeInUse, name, st.Name, m.Guest)
			}
		}
	}
	if err := os.RemoveAll(rt.volumeDir(name)); err != nil {
		return fmt.Errorf("sandbox: remove volume %s: %w", name, err)
	}
	return nil
}

// resolveMounts turns cfg's mounts into the sandbox process's shares and
// disks and the guest's mounts: bind paths made absolute and checked, named
// volumes created as their mode says, disk images checked. Disk images
// become block devices after the firstDisk ones the sandbox has already
// (the guest names them /dev/vda, /dev/vdb, ... in order).
func resolveMounts(rt *Runtime, ms []Mount, firstDisk int) ([]share, []disk, []bootcfg.Mount, error) {
	var shares []share
	var disks []disk
	var guest []bootcfg.Mount
	// attachDisk adds d as the next block device and mounts it at m.Guest.
	attachDisk := func(m Mount, d disk, fstype string, opts []string) error {
		n := firstDisk + len(disks)
		if n >= 26 {
			return fmt.Errorf("%w: more than %d disks", ErrInvalidConfig, 26-firstDisk)
		}
		disks = append(disks, d)
		guest = append(guest, bootcfg.Mount{Source: "/dev/vd" + string(rune('a'+n)), Target: m.Guest, FSType: fstype, ReadOnly: m.ReadOnly, Options: opts})
		return nil
	}
	for i, m := range ms {
		opts := append([]string(nil), m.Options...)
		switch m.Kind {
		case MountDisk:
			path, err := filepath.Abs(m.Source)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%w: disk %s: %w", ErrInvalidConfig, m.Source, err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%w: disk mount at %s: %w", ErrInvalidConfig, m.Guest, err)
			}
			format, err := DiskFormat(m)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
			}
			if !fi.Mode().IsRegular() || fi.Size() == 0 {
				return nil, nil, nil, fmt.Errorf("%w: disk mount at %s: %s is not a non-empty %s image file", ErrInvalidConfig, m.Guest, path, format)
			}
			if format == DiskQCOW2 {
				// Checked now, so that a bad image fails the create
				// with its reason instead of the sandbox process.
				d, err := openDisk(disk{Path: path, ReadOnly: true, Format: format}, "check")
				if err != nil {
					return nil, nil, nil, fmt.Errorf("%w: disk mount at %s: %w", ErrInvalidConfig, m.Guest, err)
				}
				d.Close()
			}
			fstype := m.FSType
			if fstype == "" {
				fstype = "ext4"
			}
			if err := attachDisk(m, disk{Path: path, ReadOnly: m.ReadOnly, Format: format}, fstype, opts); err != nil {
				return nil, nil, nil, err
			}
			continue
		case MountTmpfs:
			if m.SizeMiB > 0 {
				opts = append(opts, fmt.Sprintf("size=%dm", m.SizeMiB))
			}
			guest = append(guest, bootcfg.Mount{Target: m.Guest, FSType: "tmpfs", ReadOnly: m.ReadOnly, Options: opts})
			continue
		case MountBind, MountNamed:
		default:
			return nil, nil, nil, fmt.Errorf("%w: mount kind %q", ErrInvalidConfig, m.Kind)
		}
		sh := share{Tag: fmt.Sprintf("msb%d", i), ReadOnly: m.ReadOnly, QuotaBytes: uint64(m.QuotaMiB) << 20}
		if m.Kind == MountBind {
			root, err := filepath.Abs(m.Source)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%w: bind %s: %w", ErrInvalidConfig, m.Source, err)
			}
			fi, err := os.Stat(root)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%w: bind mount at %s: %w", ErrInvalidConfig, m.Guest, err)
			}
			if !fi.IsDir() {
				return nil, nil, nil, fmt.Errorf("%w: bind mount at %s: %s is not a directory (only directories can be shared)", ErrInvalidConfig, m.Guest, root)
			}
			sh.Root = root
		} else {
			var v *Volume
			var err error
			switch m.Create {
			case "create":
				v, err = CreateVolume(*rt, Volume{Name: m.Source, Kind: m.VolumeKind, SizeMiB: m.VolumeSizeMiB, QuotaMiB: m.VolumeQuotaMiB})
			case "ensure-exists":
				v, err = GetVolume(*rt, m.Source)
				if errors.Is(err, ErrVolumeNotFound) {
					v, err = CreateVolume(*rt, Volume{Name: m.Source, Kind: m.VolumeKind, SizeMiB: m.VolumeSizeMiB, QuotaMiB: m.VolumeQuotaMiB})
					if errors.Is(err, ErrVolumeExists) { // created meanwhile
						v, err = GetVolume(*rt, m.Source)
					}
				}
			default:
				v, err = GetVolume(*rt, m.Source)
			}
			if err != nil {
				return nil, nil, nil, fmt.Errorf("named mount at %s: %w", m.Guest, err)
			}
			if v.IsDisk() {
				if err := attachDisk(m, disk{Path: v.Path, ReadOnly: m.ReadOnly, Format: DiskRaw}, "ext4", opts); err != nil {
					return nil, nil, nil, err
				}
				continue
			}
			sh.Root = v.Path
			sh.QuotaBytes = uint64(v.QuotaMiB) << 20
		}
		shares = append(shares, sh)
		guest = append(guest, bootcfg.Mount{Source: sh.Tag, Target: m.Guest, FSType: "virtiofs", ReadOnly: m.ReadOnly, Options: opts})
	}
	return shares, disks, guest, nil
}

// openDisk opens the image of d as a block device named id: a raw file
// as it is, a qcow2 image through package qcow2.
func openDisk(d disk, id string) (*blk.Device, error) {
	if d.Format != DiskQCOW2 {
		return blk.New(blk.Config{Path: d.Path, ReadOnly: d.ReadOnly, ID: id})
	}
	flag := os.O_RDWR
	if d.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(d.Path, flag, 0)
	if err != nil {
		return nil, err
	}
	img, err := qcow2.Open(f, d.ReadOnly)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", d.Path, err)
	}
	dev, err := blk.New(blk.Config{Backend: img, ReadOnly: d.ReadOnly, ID: id})
	if err != nil {
		img.Close()
		return nil, err
	}
	return dev, nil
}
