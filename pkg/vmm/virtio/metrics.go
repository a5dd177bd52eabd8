// SPDX-License-Identifier: Apache-2.0

package virtio

import "sync/atomic"

// Metrics counts guest faults and traffic for one device instance. All
// fields are safe for concurrent use. The zero value is ready to use.
type Metrics struct {
	// ChainsPopped counts chains returned by Queue.Pop.
	ChainsPopped atomic.Uint64
	// UsedPushed counts used-ring entries written by Queue.Push.
	UsedPushed atomic.Uint64
	// BadChains counts chains rejected by Queue.Pop (a *QueueError).
	BadChains atomic.Uint64
	// QueueBroken counts queues that became broken (ErrQueueBroken).
	QueueBroken atomic.Uint64
	// BadRegisterAccesses counts MMIO accesses with a wrong width or
	// alignment, to unknown offsets, to read-only or write-only registers,
	// or at a point of the status protocol where they are not allowed.
	BadRegisterAccesses atomic.Uint64
	// BadFeatures counts FEATURES_OK writes refused because the driver
	// acknowledged unoffered features or omitted VIRTIO_F_VERSION_1.
	BadFeatures atomic.Uint64
	// BadStatus counts status writes that clear bits or skip steps.
	BadStatus atomic.Uint64
	// BadQueueConfig counts ready queues whose configuration was refused at
	// DRIVER_OK.
	BadQueueConfig atomic.Uint64
	// BadNotifies counts notifications for queues that do not exist or are
	// not ready.
	BadNotifies atomic.Uint64
	// ActivateFailures counts Device.Activate errors.
	ActivateFailures atomic.Uint64
	// NeedsReset counts times the device asked for DEVICE_NEEDS_RESET.
	NeedsReset atomic.Uint64
}
