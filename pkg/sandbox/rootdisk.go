// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Root disk kinds.
const (
	// RootDiskManaged is a sparse ext4 image in the sandbox directory,
	// made at creation, kept across stops and restarts (upstream's
	// default).
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
// *RootDisk) is a tmpfs: a managed disk is made with mkfs.ext4 until the
// pure-Go formatter lands, and hosts without e2fsprogs must still boot
// sandboxes.
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
		return RootDiskTmpfs
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

// makeRootDisk creates the sparse ext4 image of a managed root disk in dir
// with mkfs.ext4 (e2fsprogs) and returns its path.
func makeRootDisk(ctx context.Context, dir string, d *RootDisk) (string, error) {
	size := uint64(DefaultRootDiskMiB)
	if d != nil && d.SizeMiB != 0 {
		size = uint64(d.SizeMiB)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return "", fmt.Errorf("%w: a managed root disk needs mkfs.ext4: install e2fsprogs, or use a tmpfs root disk", ErrInvalidConfig)
	}
	path := filepath.Join(dir, upperFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("sandbox: root disk: %w", err)
	}
	err = f.Truncate(int64(size) << 20)
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("sandbox: root disk: %w", err)
	}
	// Lazy inode table and journal initialisation keep the image sparse
	// and mkfs quick; the guest kernel finishes the job in the background.
	out, err := exec.CommandContext(ctx, mkfs, "-q", "-F", "-L", "msb-upper",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", "-m", "0", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("sandbox: root disk: mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("sandbox: root disk: %w", err)
	}
	return path, nil
}
