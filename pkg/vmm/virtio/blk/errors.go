// SPDX-License-Identifier: Apache-2.0

package blk

import "errors"

// Sentinel errors; match them with errors.Is.
var (
	// ErrConfig reports an invalid Config passed to New.
	ErrConfig = errors.New("blk: invalid config")
	// ErrClosed reports an Activate after Close.
	ErrClosed = errors.New("blk: device closed")
	// ErrNoQueue reports an Activate without the request queue enabled.
	ErrNoQueue = errors.New("blk: request queue not enabled")
)
