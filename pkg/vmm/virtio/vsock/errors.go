// SPDX-License-Identifier: Apache-2.0

package vsock

import "errors"

// Sentinel errors for conditions callers branch on; match them with
// errors.Is. Operations on a Conn or Listener after its own Close return
// net.ErrClosed, and an expired deadline returns os.ErrDeadlineExceeded,
// as for the standard library's connections.
var (
	// ErrConnectionRefused reports a Dial the guest answered with RST: no
	// guest socket listens on the port, or its backlog is full.
	ErrConnectionRefused = errors.New("vsock: connection refused")
	// ErrConnectionReset reports a connection the guest aborted with RST,
	// or that the device reset because the guest broke the protocol (for
	// example by sending more than its credit allows).
	ErrConnectionReset = errors.New("vsock: connection reset by peer")
	// ErrDeviceReset reports a connection torn down because the driver
	// reset the device (virtio 1.2 §2.4), e.g. the guest rebooted.
	ErrDeviceReset = errors.New("vsock: device reset")
	// ErrNotActive reports a Dial while the driver has not activated the
	// device (before DRIVER_OK or after a reset). Retrying later may work.
	ErrNotActive = errors.New("vsock: device not active")
	// ErrClosed reports an operation on a Device after Close, or on a
	// connection the device's Close tore down.
	ErrClosed = errors.New("vsock: device closed")
	// ErrShutdown reports a Write after CloseWrite, or after the guest
	// shut down its receiving side or closed the connection.
	ErrShutdown = errors.New("vsock: connection shut down")
	// ErrAddrInUse reports a Listen on a port that already has a listener.
	ErrAddrInUse = errors.New("vsock: port already in use")
	// ErrTooManyConnections reports a Dial when the device already holds
	// Config.MaxConnections connections.
	ErrTooManyConnections = errors.New("vsock: too many connections")
	// ErrConfig reports an invalid Config given to New.
	ErrConfig = errors.New("vsock: invalid config")
)
