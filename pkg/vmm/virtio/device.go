// SPDX-License-Identifier: Apache-2.0

package virtio

import "github.com/microsandbox-go/microsandbox/pkg/vmm/memory"

// Device is a virtio device model. The transport calls its methods with its
// own lock held, one at a time; a device never sees the transport, only
// guest memory, its queues and an [Interrupt].
type Device interface {
	// Type returns the virtio device ID (§5).
	Type() DeviceType

	// Features returns the feature bits the device offers (§2.2). The
	// transport always adds FeatureVersion1 and removes bits it does not
	// implement (packed rings, notification data, ring reset); a device
	// that handles indirect descriptors and event-index suppression through
	// [Queue] may include [QueueFeatures].
	Features() uint64

	// QueueMaxSizes returns, for each virtqueue of the device, the largest
	// size the driver may choose (a power of two, at most MaxQueueSize).
	// Its length is the number of queues and must not change.
	QueueMaxSizes() []uint16

	// ReadConfig fills data from the device configuration space at offset
	// (§2.5, 1 to 8 bytes). Offsets past the end of the space read as zero:
	// the device fills what it has and leaves the rest of data zeroed.
	ReadConfig(offset uint64, data []byte)

	// WriteConfig writes data to the device configuration space at offset.
	// The guest chooses offset and data; the device ignores what it does not
	// allow and calls Interrupt.SignalConfigChange if it changed the space.
	WriteConfig(offset uint64, data []byte)

	// Activate starts the device after the driver set DRIVER_OK. features
	// are the negotiated bits; queues has one entry per queue in
	// QueueMaxSizes order, nil for a queue the driver did not enable. The
	// device may keep mem, the queues and irq until Reset. An error makes
	// the transport set DEVICE_NEEDS_RESET.
	Activate(mem *memory.Memory, queues []*Queue, irq Interrupt, features uint64) error

	// Reset stops the device and drops its queues, returning it to its
	// state before Activate (§2.4). It is called when the driver writes 0
	// to the status register, whether or not the device was activated, and
	// must not return until the device has stopped touching guest memory
	// and the queues.
	Reset()

	// QueueNotify tells the device that the driver made buffers available
	// in queue index (an "available buffer notification", §2.7.13). It is
	// called only for queues passed non-nil to Activate, and must not block
	// for long: it runs on a vCPU goroutine.
	QueueNotify(index int)
}

// Interrupt is how a device notifies the driver. Its methods are safe for
// concurrent use from any goroutine and never block. After the device is
// reset, calls on an Interrupt from an earlier activation do nothing.
type Interrupt interface {
	// SignalUsedBuffer sends a used buffer notification (§2.7.10). Call it
	// after Queue.Push when Queue.NeedsInterrupt reports true.
	SignalUsedBuffer()
	// SignalConfigChange sends a configuration change notification after
	// the device changed its configuration space (§2.5.1).
	SignalConfigChange()
	// SignalNeedsReset sets DEVICE_NEEDS_RESET and notifies the driver
	// (§2.1.2): the device met an error it cannot recover from, such as a
	// broken queue, and stops until the driver resets it.
	SignalNeedsReset()
}
