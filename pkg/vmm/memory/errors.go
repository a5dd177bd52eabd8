// SPDX-License-Identifier: Apache-2.0

package memory

import (
	"errors"
	"fmt"
)

// ErrOutOfBounds reports an access to a guest-physical range that does not lie
// entirely inside one memory region. Errors returned by accessors wrap it
// together with the address and length; match it with errors.Is.
var ErrOutOfBounds = errors.New("memory: guest address out of bounds")

// ErrInvalidRegion reports a region layout rejected by [New] or
// [NewFromBytes]: empty, overlapping, misaligned or wrapping past 2^64.
var ErrInvalidRegion = errors.New("memory: invalid region")

// outOfBounds wraps ErrOutOfBounds with the faulting range.
func outOfBounds(addr GuestAddr, n uint64) error {
	return fmt.Errorf("%w: %#x+%#x", ErrOutOfBounds, uint64(addr), n)
}
