// SPDX-License-Identifier: Apache-2.0

package virtio

import (
	"errors"
	"fmt"
)

// Sentinel errors. Guest-caused errors from [Queue.Pop] wrap one of them in a
// [*QueueError]; match them with errors.Is.
var (
	// ErrQueueBroken reports a queue that cannot be used until the device
	// is reset: the avail ring is out of guest RAM, its index jumped more
	// than the queue size, or it named a head outside the queue.
	ErrQueueBroken = errors.New("virtio: queue broken")
	// ErrDescriptorIndex reports a next or indirect index outside its table.
	ErrDescriptorIndex = errors.New("virtio: descriptor index out of range")
	// ErrChainTooLong reports a chain longer than its table, i.e. a loop.
	ErrChainTooLong = errors.New("virtio: descriptor chain too long")
	// ErrIndirect reports a malformed indirect descriptor: not negotiated,
	// combined with NEXT, nested, empty, or a table length that is not a
	// multiple of 16.
	ErrIndirect = errors.New("virtio: invalid indirect descriptor")
	// ErrDescriptorOrder reports a device-readable descriptor after a
	// device-writable one (§2.7.4.2).
	ErrDescriptorOrder = errors.New("virtio: readable descriptor after writable")
	// ErrBufferRange reports a buffer or table not inside guest RAM; the
	// error also wraps memory.ErrOutOfBounds.
	ErrBufferRange = errors.New("virtio: buffer outside guest memory")
	// ErrQueueConfig reports a queue size or ring layout the device refuses
	// (§2.7: power of two, at most the maximum, aligned, inside guest RAM).
	ErrQueueConfig = errors.New("virtio: invalid queue configuration")
	// ErrChainFull reports a write past the end of a chain's writable
	// buffers.
	ErrChainFull = errors.New("virtio: descriptor chain writable space exhausted")
)

// QueueError describes a guest fault found while walking a descriptor chain.
// Err wraps one of the sentinels above.
type QueueError struct {
	// Queue is the queue index from [QueueConfig.Index].
	Queue int
	// Head is the head descriptor of the chain. It is valid (less than the
	// queue size) unless Err wraps ErrQueueBroken, so the device may return
	// it with Queue.Push(Head, 0).
	Head uint16
	// Err is the reason.
	Err error
}

// Error implements error.
func (e *QueueError) Error() string {
	return fmt.Sprintf("virtio: queue %d head %d: %v", e.Queue, e.Head, e.Err)
}

// Unwrap returns the reason.
func (e *QueueError) Unwrap() error { return e.Err }
