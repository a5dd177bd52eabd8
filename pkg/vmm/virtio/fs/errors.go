// SPDX-License-Identifier: Apache-2.0

package fs

import "errors"

// Sentinel errors; match them with errors.Is.
var (
	// ErrConfig reports an invalid Config passed to New.
	ErrConfig = errors.New("fs: invalid config")
	// ErrClosed reports an Activate after Close.
	ErrClosed = errors.New("fs: device closed")
	// ErrNoQueue reports an Activate without the first request queue
	// enabled.
	ErrNoQueue = errors.New("fs: request queue not enabled")
)
