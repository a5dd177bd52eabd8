// SPDX-License-Identifier: Apache-2.0

package p9

import "errors"

// Sentinel errors; match them with errors.Is.
var (
	// ErrConfig reports an invalid Config passed to New.
	ErrConfig = errors.New("p9: invalid config")
	// ErrClosed reports an Activate after Close.
	ErrClosed = errors.New("p9: device closed")
	// ErrNoQueue reports an Activate without the request queue enabled.
	ErrNoQueue = errors.New("p9: request queue not enabled")
)
