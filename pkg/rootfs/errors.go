// SPDX-License-Identifier: Apache-2.0

package rootfs

import (
	"errors"
	"fmt"
)

var (
	// ErrUnsafePath reports a layer entry whose name is absolute, contains a
	// ".." component or a NUL byte, or is empty.
	ErrUnsafePath = errors.New("rootfs: unsafe path")
	// ErrNameTooLong reports a path longer than 4096 bytes, a component
	// longer than 255 bytes, or a symlink target of 4096 bytes or more.
	ErrNameTooLong = errors.New("rootfs: name too long")
	// ErrNotDir reports an entry whose parent resolves to something that is
	// neither a directory nor a symlink to one.
	ErrNotDir = errors.New("rootfs: parent is not a directory")
	// ErrSymlinkLoop reports a parent path that needs more than 40 symlink
	// hops (Linux MAXSYMLINKS) to resolve.
	ErrSymlinkLoop = errors.New("rootfs: too many levels of symbolic links")
	// ErrHardlinkTarget reports a hard link whose target is missing (never
	// present or deleted by a whiteout) or is a directory.
	ErrHardlinkTarget = errors.New("rootfs: bad hard link target")
	// ErrUnsupportedEntry reports a tar entry type that has no place in a
	// root filesystem, or an invalid owner or device number.
	ErrUnsupportedEntry = errors.New("rootfs: unsupported tar entry")
	// ErrLimit reports a layer beyond Options.MaxDataBytes or
	// Options.MaxEntries.
	ErrLimit = errors.New("rootfs: limit exceeded")
	// ErrClosed reports use of a Tree after Close or after a failed Apply.
	ErrClosed = errors.New("rootfs: tree closed or broken")
)

// EntryError locates an error at one entry of one layer.
type EntryError struct {
	Layer int    // 0-based layer index, bottom first
	Name  string // the tar header name, truncated to 256 bytes
	Err   error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("rootfs: layer %d: entry %q: %v", e.Layer, e.Name, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }
