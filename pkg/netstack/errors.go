// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
)

var (
	// ErrClosed is returned by Start after Close, or a second Start.
	ErrClosed = errors.New("netstack: stack closed or already started")
	// ErrConfig is wrapped by New for an invalid Config.
	ErrConfig = errors.New("netstack: invalid config")
)

// tcpipError converts a gVisor error at the package edge; op names the
// failed call.
func tcpipError(op string, err tcpip.Error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("netstack: %s: %s", op, err.String())
}
