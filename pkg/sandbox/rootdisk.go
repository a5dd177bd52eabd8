// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs/ext4fmt"
)

// Root disk kinds.
const (
	// RootDiskManaged is a sparse ext4 image in the sandbox directory,
	// made at creation, kept across stops and restarts (the default, as
	// upstream's).
	RootDiskManaged = "managed"
	// RootDiskTmpfs keeps the writable layer in guest memory: it is lost
	// when the sandbox stops.
	RootDiskTmpfs = "tmpfs"
)

// DefaultRootDiskMiB is the size of a managed root disk when RootDisk
// names none (upstream's 4096 MiB; the image is sparse, so only written
// blocks take host space).
const DefaultRootDiskMiB = 4096

// upperFile is the managed root disk in a sandbox directory.
const upperFile = "upper.ext4"

// guestUpperDevice is where the managed root disk appears in the guest:
// the second virtio-blk device, after the root image.
const guestUpperDevice = "/dev/vdb"

// RootDisk is the writable layer over the image. The zero value (and a nil
// *RootDisk) is a managed disk of DefaultRootDiskMiB.
type RootDisk struct {
	// Kind is RootDiskManaged (when "") or RootDiskTmpfs.
	Kind string `json:"kind,omitempty"`
	// SizeMiB is the disk's size, or the tmpfs's limit; zero means
	// DefaultRootDiskMiB for a disk and half the guest memory for a
	// tmpfs.
	SizeMiB uint32 `json:"size_mib,omitempty"`
}

func (d *RootDisk) kind() string {
	if d == nil || d.Kind == "" {
		return RootDiskManaged
	}
	return d.Kind
}

func (d *RootDisk) validate() error {
	switch d.kind() {
	case RootDiskManaged, RootDiskTmpfs:
	default:
		return fmt.Errorf("%w: root disk kind %q: want managed or tmpfs", ErrInvalidConfig, d.Kind)
	}
	if d != nil && d.SizeMiB > 1<<24 {
		return fmt.Errorf("%w: root disk of %d MiB: at most 16 TiB", ErrInvalidConfig, d.SizeMiB)
	}
	if d != nil && d.kind() == RootDiskManaged && d.SizeMiB != 0 && d.SizeMiB < 16 {
		return fmt.Errorf("%w: root disk of %d MiB: at least 16", ErrInvalidConfig, d.SizeMiB)
	}
	return nil
}

// makeRootDisk formats the sparse ext4 image of a managed root disk in dir
// (pkg/rootfs/ext4fmt: no host tools) and returns its path.
func makeRootDisk(dir string, d *RootDisk) (string, error) {
	size := uint64(DefaultRootDiskMiB)
	if d != nil && d.SizeMiB != 0 {
		size = uint64(d.SizeMiB)
	}
	path := filepath.Join(dir, upperFile)
	tmp := path + ".tmp"
	if err := ext4fmt.FormatFile(tmp, int64(size)<<20, ext4fmt.Options{Label: "msb-upper"}); err != nil {
		return "", fmt.Errorf("sandbox: root disk: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("sandbox: root disk: %w", err)
	}
	return path, nil
}
