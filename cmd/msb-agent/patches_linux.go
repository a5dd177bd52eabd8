// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

// openPatchDir opens bootcfg.PatchDir in the initramfs, or returns nil when
// no patch has a payload. It runs before the switch into the root: the
// descriptor keeps the payloads reachable afterwards, when the initramfs
// lies hidden below the new root.
func openPatchDir(c *bootcfg.Config) (*os.File, error) {
	for _, p := range c.Patches {
		if p.Data != "" {
			f, err := os.Open(bootcfg.PatchDir)
			if err != nil {
				return nil, fmt.Errorf("patch payloads: %w", err)
			}
			return f, nil
		}
	}
	return nil, nil
}

// applyPatches applies patches below root ("/" in the guest, after the
// switch; a directory in tests), in order, and deletes each payload from
// the initramfs once used (it holds guest RAM). The error names the
// failing patch.
func applyPatches(root string, patches []bootcfg.Patch, payloads *os.File) error {
	for _, p := range patches {
		p.Path = filepath.Join(root, p.Path)
		if err := applyPatch(p, payloads); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if p.Data != "" {
			unix.Unlinkat(int(payloads.Fd()), p.Data, 0)
		}
	}
	return nil
}

func applyPatch(p bootcfg.Patch, payloads *os.File) error {
	switch p.Op {
	case bootcfg.PatchWrite:
		if err := clearPath(p.Path, p.Replace); err != nil {
			return err
		}
		mode := uint32(0o644)
		if p.Mode != nil {
			mode = *p.Mode
		}
		return copyPayload(payloads, p.Data, p.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, &mode)
	case bootcfg.PatchAppend:
		// No O_CREATE: appending needs the file (upstream's rule).
		return copyPayload(payloads, p.Data, p.Path, os.O_WRONLY|os.O_APPEND, nil)
	case bootcfg.PatchMkdir:
		if err := os.MkdirAll(p.Path, 0o755); err != nil {
			return err
		}
		if p.Mode != nil {
			// chmod, not the mkdir mode: the umask and an existing
			// directory would keep other bits.
			return unix.Chmod(p.Path, *p.Mode)
		}
		return nil
	case bootcfg.PatchRemove:
		return os.RemoveAll(p.Path)
	case bootcfg.PatchSymlink:
		if err := clearPath(p.Path, p.Replace); err != nil {
			return err
		}
		return os.Symlink(p.Target, p.Path)
	}
	return fmt.Errorf("unknown op %q", p.Op)
}

// clearPath makes way for a new entry at path: it creates the parent
// directories and, if something is at path, removes it when replace is set
// and it is not a directory, else fails.
func clearPath(path string, replace bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !replace {
		return fmt.Errorf("path already exists in rootfs: %s (set replace to allow)", path)
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory; replace only replaces files and links", path)
	}
	return os.Remove(path)
}

// copyPayload copies the payload file name in dir to path, opened with
// flag; mode, when set, gives the created file its permission bits.
func copyPayload(dir *os.File, name, path string, flag int, mode *uint32) error {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("payload %s: %w", name, err)
	}
	src := os.NewFile(uintptr(fd), name)
	defer src.Close()
	// O_NONBLOCK: opening a fifo without a reader fails (ENXIO) instead
	// of hanging the boot; it changes nothing for regular files.
	dst, err := os.OpenFile(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	fi, err := dst.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err == nil {
		_, err = io.Copy(dst, src)
	}
	if err == nil && mode != nil {
		// fchmod, not the open mode: the umask would clear bits, and
		// os.FileMode does not carry setuid/setgid/sticky as 07000.
		err = unix.Fchmod(int(dst.Fd()), *mode)
	}
	return errors.Join(err, dst.Close())
}
