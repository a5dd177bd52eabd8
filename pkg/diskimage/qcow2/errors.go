// SPDX-License-Identifier: Apache-2.0

package qcow2

import (
	"errors"
	"fmt"
)

// Sentinel errors; match them with errors.Is. Every error for a feature
// the package does not implement also matches ErrUnsupported, so a caller
// can tell "convert this image" apart from "this image is damaged".
var (
	// ErrNotImage reports a file that does not start with the qcow2 magic.
	ErrNotImage = errors.New("qcow2: not a qcow2 image")
	// ErrCorrupt reports an image whose metadata breaks the format: a
	// header field out of range, a table past the end of the file or
	// overlapping another, an entry with reserved bits set, or compressed
	// data that does not inflate to a cluster. It is found at Open or,
	// for L2 entries and compressed data, by the ReadAt or WriteAt that
	// meets it.
	ErrCorrupt = errors.New("qcow2: corrupt image")
	// ErrUnsupported reports an image that uses a feature this package
	// does not implement. Each such error also matches one of the more
	// specific sentinels below.
	ErrUnsupported = errors.New("qcow2: unsupported image")

	// ErrVersion reports a version other than 2 and 3.
	ErrVersion = errors.New("qcow2: unsupported version")
	// ErrBackingFile reports an image with a backing file.
	ErrBackingFile = errors.New("qcow2: backing files are not supported")
	// ErrEncrypted reports an encrypted image (AES or LUKS).
	ErrEncrypted = errors.New("qcow2: encrypted images are not supported")
	// ErrExternalData reports an image whose data lives in an external
	// data file.
	ErrExternalData = errors.New("qcow2: external data files are not supported")
	// ErrExtendedL2 reports an image with extended L2 entries
	// (subclusters).
	ErrExtendedL2 = errors.New("qcow2: extended L2 entries are not supported")
	// ErrCompression reports compressed clusters in a format other than
	// deflate (zlib), such as zstd.
	ErrCompression = errors.New("qcow2: compression type not supported")
	// ErrFeature reports an incompatible feature bit this package does
	// not know; the format requires refusing such an image.
	ErrFeature = errors.New("qcow2: unknown incompatible feature")
	// ErrClusterSize reports a cluster size above 2 MiB.
	ErrClusterSize = errors.New("qcow2: cluster size not supported")
	// ErrTooLarge reports a virtual disk above 64 TiB, or an L1 or
	// refcount table above the package's limits (32 MiB and 8 MiB), at
	// Open or when a write would need a larger one.
	ErrTooLarge = errors.New("qcow2: image too large")
	// ErrMarkedCorrupt reports an image whose header has the corrupt bit
	// set: QEMU found an inconsistency and flagged it.
	ErrMarkedCorrupt = errors.New("qcow2: image is marked corrupt")
	// ErrDirty reports, for a read-write Open, an image whose dirty bit
	// is set: its refcounts may be stale (lazy refcounts, or a writer
	// that did not close it).
	ErrDirty = errors.New("qcow2: image is dirty")
	// ErrRefcountWidth reports, for a read-write Open, refcounts other
	// than 16 bits wide.
	ErrRefcountWidth = errors.New("qcow2: refcount width not supported for writing")
	// ErrSnapshots reports, for a read-write Open, an image with internal
	// snapshots.
	ErrSnapshots = errors.New("qcow2: writing images with internal snapshots is not supported")

	// ErrReadOnly reports a WriteAt on an image opened read-only.
	ErrReadOnly = errors.New("qcow2: image is read-only")
	// ErrRange reports an access at a negative offset or a write past the
	// virtual size.
	ErrRange = errors.New("qcow2: access out of range")
	// ErrClosed reports a call after Close.
	ErrClosed = errors.New("qcow2: image closed")
	// ErrBroken reports a write or Sync after an earlier metadata update
	// failed: the image is no longer written to, so that what is on disk
	// stays consistent. Reads still work.
	ErrBroken = errors.New("qcow2: image broken by an earlier write error")
)

// unsupportedError is an error for a feature the package does not
// implement: it matches ErrUnsupported and unwraps to a specific sentinel.
type unsupportedError struct {
	kind error // a specific sentinel such as ErrBackingFile
	msg  string
}

func (e *unsupportedError) Error() string        { return e.msg }
func (e *unsupportedError) Unwrap() error        { return e.kind }
func (e *unsupportedError) Is(target error) bool { return target == ErrUnsupported }

// unsupported returns an error matching ErrUnsupported and kind, whose text
// is kind's followed by the formatted detail.
func unsupported(kind error, format string, args ...any) error {
	return &unsupportedError{kind: kind, msg: kind.Error() + ": " + fmt.Sprintf(format, args...)}
}

// corrupt returns an error wrapping ErrCorrupt with the formatted detail.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}
