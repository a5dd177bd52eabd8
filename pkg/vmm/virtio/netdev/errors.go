// SPDX-License-Identifier: Apache-2.0

package netdev

import "errors"

// Sentinel errors for conditions callers branch on; match them with
// errors.Is.
var (
	// ErrConfig reports an invalid Config passed to New.
	ErrConfig = errors.New("netdev: invalid config")
	// ErrClosed reports a Deliver or Activate after Close.
	ErrClosed = errors.New("netdev: device closed")
	// ErrNotActive reports a frame offered while the driver has not
	// activated the device (before DRIVER_OK, after a reset, or after the
	// device asked for DEVICE_NEEDS_RESET). The frame is dropped; a guest
	// that is not listening loses frames as a real link would.
	ErrNotActive = errors.New("netdev: device not active")
	// ErrQueueFull reports a frame dropped by Deliver because
	// Config.RxQueueLen host frames already wait for guest rx buffers.
	ErrQueueFull = errors.New("netdev: rx queue full")
	// ErrFrameSize reports a host frame shorter than an Ethernet header
	// (14 bytes) or longer than MTU+18 bytes.
	ErrFrameSize = errors.New("netdev: bad frame size")
	// ErrNoQueue reports an Activate without both the rx and tx queues.
	ErrNoQueue = errors.New("netdev: rx and tx queues are required")
)
