// SPDX-License-Identifier: Apache-2.0

package netdev

import "sync/atomic"

// Metrics counts one device's traffic, drops and guest faults. All fields
// are safe for concurrent use; the zero value is ready to use. Every frame
// offered in either direction ends up in exactly one of the packet
// counters or one of the drop counters of its direction.
type Metrics struct {
	// TxPackets counts guest frames the backend accepted.
	TxPackets atomic.Uint64
	// TxBytes counts the bytes of those frames (virtio_net_hdr excluded).
	TxBytes atomic.Uint64
	// TxDropsShort counts tx chains too short for a virtio_net_hdr and an
	// Ethernet header (12+14 bytes), including empty chains.
	TxDropsShort atomic.Uint64
	// TxDropsTooBig counts tx frames longer than MTU+18 bytes.
	TxDropsTooBig atomic.Uint64
	// TxDropsBadHeader counts tx frames whose virtio_net_hdr asks for an
	// offload that was not negotiated (NEEDS_CSUM, a GSO type).
	TxDropsBadHeader atomic.Uint64
	// TxDropsBackend counts tx frames the backend refused with an error.
	TxDropsBackend atomic.Uint64

	// RxPackets counts host frames delivered into guest rx buffers.
	RxPackets atomic.Uint64
	// RxBytes counts the bytes of those frames (virtio_net_hdr excluded).
	RxBytes atomic.Uint64
	// RxDropsQueueFull counts host frames refused by Deliver because the
	// rx queue held Config.RxQueueLen frames.
	RxDropsQueueFull atomic.Uint64
	// RxDropsNotActive counts host frames refused because the device was
	// not active, and queued frames discarded by a reset, Close or a
	// broken queue.
	RxDropsNotActive atomic.Uint64
	// RxDropsSize counts host frames refused for a size outside 14 to
	// MTU+18 bytes.
	RxDropsSize atomic.Uint64
	// RxDropsSmallBuffer counts host frames dropped because the guest's
	// next rx chain could not hold the header and the frame; the chain is
	// returned to the guest unused.
	RxDropsSmallBuffer atomic.Uint64

	// BadChains counts chains the virtqueue rejected (a
	// *virtio.QueueError), returned to the guest unused.
	BadChains atomic.Uint64
	// NeedsReset counts times the device asked the driver to reset it
	// because a queue broke.
	NeedsReset atomic.Uint64
}
