// SPDX-License-Identifier: Apache-2.0

package fuse

import "errors"

// ErrConfig reports an invalid Config passed to New; match it with
// errors.Is.
var ErrConfig = errors.New("fuse: invalid config")
