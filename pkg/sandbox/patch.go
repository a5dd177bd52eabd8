// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

// PatchKind is the kind of a Patch; the values are upstream's wire names
// (upstream-api.md §1.14).
type PatchKind string

// Patch kinds.
const (
	PatchText     PatchKind = "text"      // Path gets Content
	PatchFile     PatchKind = "file"      // Path gets Data
	PatchAppend   PatchKind = "append"    // Content appended to the existing file Path
	PatchMkdir    PatchKind = "mkdir"     // directory Path and parents, idempotent
	PatchRemove   PatchKind = "remove"    // Path and what is below it, idempotent
	PatchSymlink  PatchKind = "symlink"   // Link -> Target
	PatchCopyFile PatchKind = "copy_file" // host file Src to Dst
	PatchCopyDir  PatchKind = "copy_dir"  // host directory Src into Dst
)

// Patch is one change to the sandbox's root filesystem, made in its
// writable layer before anything runs in it; Config.Patches apply in
// order at the first boot, and again at every boot of a sandbox whose
// writable layer is a tmpfs (a managed root disk keeps them).
// Guest paths are absolute and clean, not "/", and not in /proc, /sys or
// /dev. Text, File, CopyFile and Symlink fail on an existing path unless
// Replace, and never replace a directory; CopyDir merges into an existing
// Dst, each file and link failing on an existing path unless Replace.
// Host files (Src) are read when the sandbox is created; CopyDir copies
// the symlinks below Src as symlinks, never following them.
type Patch struct {
	Kind    PatchKind `json:"kind"`
	Path    string    `json:"path,omitempty"`
	Content string    `json:"content,omitempty"`
	Data    []byte    `json:"data,omitempty"`
	// Mode is the permission bits (at most 07777) of the file or
	// directory made by Text, File, Mkdir and CopyFile; nil means 0644
	// for files, 0755 for directories and, for CopyFile, the host file's.
	Mode    *uint32 `json:"mode,omitempty"`
	Replace bool    `json:"replace,omitempty"`
	Src     string  `json:"src,omitempty"`
	Dst     string  `json:"dst,omitempty"`
	Target  string  `json:"target,omitempty"`
	Link    string  `json:"link,omitempty"`
}

// String names the patch for messages: its kind and guest path.
func (p Patch) String() string {
	switch p.Kind {
	case PatchSymlink:
		return fmt.Sprintf("%s %s -> %s", p.Kind, p.Link, p.Target)
	case PatchCopyFile, PatchCopyDir:
		return fmt.Sprintf("%s %s -> %s", p.Kind, p.Src, p.Dst)
	}
	return fmt.Sprintf("%s %s", p.Kind, p.Path)
}

// guestPath is the guest path the patch writes.
func (p Patch) guestPath() string {
	switch p.Kind {
	case PatchSymlink:
		return p.Link
	case PatchCopyFile, PatchCopyDir:
		return p.Dst
	}
	return p.Path
}

// maxPatchBytes bounds the payload of a sandbox's patches: it travels in
// the initramfs and is copied into the tmpfs upper, both in guest RAM, so
// a quarter of that.
func maxPatchBytes(memoryMiB uint32) int64 { return int64(memoryMiB) << 20 / 4 }

// validatePatches checks what can be checked without the host's files.
func validatePatches(ps []Patch) []error {
	var errs []error
	for i, p := range ps {
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("%w: patch %d (%s): "+format, append([]any{ErrInvalidConfig, i, p.Kind}, a...)...))
		}
		switch p.Kind {
		case PatchText, PatchFile, PatchAppend, PatchMkdir, PatchRemove, PatchSymlink, PatchCopyFile, PatchCopyDir:
		default:
			bad("unknown kind %q", p.Kind)
			continue
		}
		if g := p.guestPath(); !bootcfg.ValidPatchPath(g) {
			bad("guest path %q: want an absolute, clean path other than / outside /proc, /sys and /dev", g)
		}
		if p.Kind == PatchSymlink && (p.Target == "" || strings.ContainsRune(p.Target, 0)) {
			bad("symlink target %q is empty or contains NUL", p.Target)
		}
		if (p.Kind == PatchCopyFile || p.Kind == PatchCopyDir) && (p.Src == "" || strings.ContainsRune(p.Src, 0)) {
			bad("host source %q is empty or contains NUL", p.Src)
		}
		if p.Mode != nil && *p.Mode > 0o7777 {
			bad("mode %#o has bits beyond 07777", *p.Mode)
		}
	}
	return errs
}

// bootPatches converts ps for the guest, reading the host files of
// CopyFile and CopyDir. Each operation names the patch it comes from, so
// that a failure in the guest names the user's patch on the console.
func bootPatches(ps []Patch, memoryMiB uint32) ([]bootcfg.Patch, error) {
	if err := errors.Join(validatePatches(ps)...); err != nil {
		return nil, err
	}
	var out []bootcfg.Patch
	var total int64
	for i, p := range ps {
		from := fmt.Sprintf("patch %d (%s)", i, p)
		op := func(b bootcfg.Patch) {
			b.From = from
			total += int64(len(b.Content))
			out = append(out, b)
		}
		switch p.Kind {
		case PatchText:
			op(bootcfg.Patch{Op: bootcfg.PatchWrite, Path: p.Path, Content: []byte(p.Content), Mode: p.Mode, Replace: p.Replace})
		case PatchFile:
			op(bootcfg.Patch{Op: bootcfg.PatchWrite, Path: p.Path, Content: p.Data, Mode: p.Mode, Replace: p.Replace})
		case PatchAppend:
			op(bootcfg.Patch{Op: bootcfg.PatchAppend, Path: p.Path, Content: []byte(p.Content)})
		case PatchMkdir:
			op(bootcfg.Patch{Op: bootcfg.PatchMkdir, Path: p.Path, Mode: p.Mode})
		case PatchRemove:
			op(bootcfg.Patch{Op: bootcfg.PatchRemove, Path: p.Path})
		case PatchSymlink:
			op(bootcfg.Patch{Op: bootcfg.PatchSymlink, Path: p.Link, Target: p.Target, Replace: p.Replace})
		case PatchCopyFile:
			fi, err := os.Stat(p.Src)
			if err == nil && !fi.Mode().IsRegular() {
				err = fmt.Errorf("%s is not a regular file", p.Src)
			}
			var data []byte
			if err == nil {
				data, err = os.ReadFile(p.Src)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, from, err)
			}
			mode := p.Mode
			if mode == nil {
				m := unixPerm(fi.Mode())
				mode = &m
			}
			op(bootcfg.Patch{Op: bootcfg.PatchWrite, Path: p.Dst, Content: data, Mode: mode, Replace: p.Replace})
		case PatchCopyDir:
			if err := copyDir(p, op); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, from, err)
			}
		}
		if limit := maxPatchBytes(memoryMiB); total > limit {
			return nil, fmt.Errorf("%w: %s: patch contents reach %d bytes, more than a quarter of the guest memory (%d bytes)", ErrInvalidConfig, from, total, limit)
		}
	}
	return out, nil
}

// copyDir emits the operations that copy the host directory p.Src into
// p.Dst: directories with their modes, files with their contents and
// modes, symlinks as symlinks. Dst itself is made without a mode, so that
// merging into an existing directory (/etc) keeps its mode.
func copyDir(p Patch, op func(bootcfg.Patch)) error {
	fi, err := os.Stat(p.Src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", p.Src)
	}
	// WalkDir lstat()s what it finds and does not descend into symlinked
	// directories: links are copied, never followed.
	return filepath.WalkDir(p.Src, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(p.Src, hp)
		if err != nil {
			return err
		}
		if rel == "." {
			op(bootcfg.Patch{Op: bootcfg.PatchMkdir, Path: p.Dst})
			return nil
		}
		gp := path.Join(p.Dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := unixPerm(info.Mode())
		switch t := info.Mode().Type(); {
		case t == 0:
			data, err := os.ReadFile(hp)
			if err != nil {
				return err
			}
			op(bootcfg.Patch{Op: bootcfg.PatchWrite, Path: gp, Content: data, Mode: &mode, Replace: p.Replace})
		case t == fs.ModeDir:
			op(bootcfg.Patch{Op: bootcfg.PatchMkdir, Path: gp, Mode: &mode})
		case t == fs.ModeSymlink:
			target, err := os.Readlink(hp)
			if err != nil {
				return err
			}
			op(bootcfg.Patch{Op: bootcfg.PatchSymlink, Path: gp, Target: target, Replace: p.Replace})
		default:
			return fmt.Errorf("%s: cannot copy a %v", hp, t)
		}
		return nil
	})
}

// unixPerm is m's permission bits as chmod(2) takes them.
func unixPerm(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}
