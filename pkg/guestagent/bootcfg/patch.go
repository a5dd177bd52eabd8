// SPDX-License-Identifier: Apache-2.0

package bootcfg

import (
	"fmt"
	"strings"
)

// PatchDir is the initramfs directory holding the patches' payloads, one
// file per write or append, named by Patch.Data. The agent deletes each
// once applied.
const PatchDir = "/msb/patches"

// Patch operations. The host turns each user-level patch (text, file,
// copy_file, copy_dir, ...) into one or more of these.
const (
	// PatchWrite creates the regular file Path with the payload Data and
	// permission bits Mode (nil: 0644). An existing Path is an error
	// unless Replace, and a directory is one even then.
	PatchWrite = "write"
	// PatchAppend appends the payload Data to the existing regular file
	// Path.
	PatchAppend = "append"
	// PatchMkdir creates the directory Path and its parents (idempotent)
	// and, when Mode is set, gives Path those permission bits.
	PatchMkdir = "mkdir"
	// PatchRemove removes Path and everything below it (idempotent).
	PatchRemove = "remove"
	// PatchSymlink creates the symbolic link Path -> Target. An existing
	// Path is an error unless Replace, and a directory is one even then.
	PatchSymlink = "symlink"
)

// Patch is one change to the root filesystem. The agent applies the
// patches in order after it has assembled the root and switched into it,
// before the configured mounts and before anything runs, so they land in
// the writable layer and every exec sees them. Paths resolve inside the
// root (its symlinks included), as they would for a process there. Parent
// directories a write or symlink needs are created (0755, root).
type Patch struct {
	// Op is one of the Patch* operations.
	Op string `json:"op"`
	// Path is the absolute, clean guest path; not "/" and not in /proc,
	// /sys or /dev.
	Path string `json:"path"`
	// Data names the payload file in PatchDir (write and append): a plain
	// file name. WriteInitramfs assigns it.
	Data string `json:"data,omitempty"`
	// Content is the payload on the host side; WriteInitramfs stores it as
	// PatchDir/Data, never in the JSON.
	Content []byte `json:"-"`
	// Target is the symlink's content (symlink), not resolved or checked
	// beyond being non-empty and without NUL.
	Target string `json:"target,omitempty"`
	// Mode holds permission bits (at most 07777) for write and mkdir.
	Mode *uint32 `json:"mode,omitempty"`
	// Replace lets write and symlink replace an existing non-directory.
	Replace bool `json:"replace,omitempty"`
	// From names the user's patch this comes from ("patch 2 (copy_dir
	// /src -> /app)"), for the console message when it fails.
	From string `json:"from,omitempty"`
}

// String names p for messages: From, else "patch (op path)".
func (p Patch) String() string {
	if p.From != "" {
		return p.From
	}
	return "patch (" + p.Op + " " + p.Path + ")"
}

// ValidPatchPath reports whether p may be a patch's path: absolute, clean
// (no "..", no trailing slash), not "/", no NUL, and not in /proc, /sys or
// /dev, which the agent mounts over the root.
func ValidPatchPath(p string) bool {
	if !absPath(p) || p == "/" {
		return false
	}
	for _, sys := range []string{"/proc", "/sys", "/dev"} {
		if p == sys || strings.HasPrefix(p, sys+"/") {
			return false
		}
	}
	return true
}

func validatePatch(i int, p Patch) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: patches[%d] (%s %s): "+format, append([]any{ErrInvalid, i, p.Op, p.Path}, args...)...))
	}
	if !ValidPatchPath(p.Path) {
		bad("path %q is not a clean absolute path other than / outside /proc, /sys and /dev", p.Path)
	}
	payload := p.Op == PatchWrite || p.Op == PatchAppend
	switch p.Op {
	case PatchWrite, PatchAppend, PatchMkdir, PatchRemove, PatchSymlink:
	default:
		bad("op %q, want write, append, mkdir, remove or symlink", p.Op)
	}
	if payload && (p.Data == "" || p.Data == "." || p.Data == ".." || strings.ContainsAny(p.Data, "/\x00")) {
		bad("data %q is not a file name", p.Data)
	}
	if !payload && p.Data != "" {
		bad("data is only for write and append")
	}
	if p.Op == PatchSymlink {
		if p.Target == "" || strings.ContainsRune(p.Target, 0) {
			bad("symlink target %q is empty or contains NUL", p.Target)
		}
	} else if p.Target != "" {
		bad("target is only for symlink")
	}
	if p.Mode != nil {
		if *p.Mode > 0o7777 {
			bad("mode %#o has bits beyond 07777", *p.Mode)
		}
		if p.Op != PatchWrite && p.Op != PatchMkdir {
			bad("mode is only for write and mkdir")
		}
	}
	if strings.ContainsAny(p.From, "\x00\n") {
		bad("from contains a control character")
	}
	return errs
}
