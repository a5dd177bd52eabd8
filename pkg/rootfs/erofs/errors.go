// SPDX-License-Identifier: Apache-2.0

package erofs

import "errors"

var (
	// ErrInvalidTree reports a tree that cannot be written as EROFS: a bad
	// name, a duplicate entry, a directory linked twice, an unknown file type,
	// or a value beyond a field of the on-disk format.
	ErrInvalidTree = errors.New("erofs: invalid tree")
	// ErrUnsupportedXattr reports an extended attribute whose name has no
	// EROFS prefix index (only user., trusted., security. and the two POSIX
	// ACL names have one) or whose name or value is too long.
	ErrUnsupportedXattr = errors.New("erofs: unsupported xattr")
	// ErrTooLarge reports an image beyond 2^32 blocks (16 TiB).
	ErrTooLarge = errors.New("erofs: image too large")
	// ErrShortData reports a regular file whose Data returned fewer bytes
	// than its Size.
	ErrShortData = errors.New("erofs: short file data")
)
