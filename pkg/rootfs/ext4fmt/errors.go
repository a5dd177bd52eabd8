// SPDX-License-Identifier: Apache-2.0

package ext4fmt

import "errors"

var (
	// ErrInvalidSize reports an image size below MinSize or above MaxSize,
	// or an InodeRatio outside [MinInodeRatio, MaxInodeRatio].
	ErrInvalidSize = errors.New("ext4fmt: invalid size")
	// ErrInvalidLabel reports a label longer than MaxLabelLen bytes or one
	// that contains a NUL byte.
	ErrInvalidLabel = errors.New("ext4fmt: invalid label")
	// ErrNotRegular reports a target that is not a regular file: Format
	// makes holes with ftruncate, which block devices do not support.
	ErrNotRegular = errors.New("ext4fmt: not a regular file")
)
