// SPDX-License-Identifier: Apache-2.0

package blk

import "sync/atomic"

// Metrics counts one device's requests, traffic and faults. All fields are
// safe for concurrent use.
type Metrics struct {
	// Reads counts IN requests completed with StatusOK.
	Reads atomic.Uint64
	// Writes counts OUT requests completed with StatusOK.
	Writes atomic.Uint64
	// Flushes counts FLUSH requests completed with StatusOK.
	Flushes atomic.Uint64
	// GetIDs counts GET_ID requests completed with StatusOK.
	GetIDs atomic.Uint64
	// ReadBytes counts bytes read from the image into guest buffers.
	ReadBytes atomic.Uint64
	// WriteBytes counts bytes written from guest buffers to the image.
	WriteBytes atomic.Uint64
	// BadRequests counts requests answered StatusIOErr because of the
	// guest: a short header, a data length that is not a multiple of 512,
	// a range past the capacity, or a write to a read-only disk.
	BadRequests atomic.Uint64
	// ReadOnlyRejects counts OUT requests refused because the disk is
	// read-only; each is also in BadRequests.
	ReadOnlyRejects atomic.Uint64
	// IOErrors counts requests answered StatusIOErr because a read, write
	// or sync of the disk failed: host I/O, or a Backend's own error such
	// as a corrupt qcow2 table.
	IOErrors atomic.Uint64
	// Unsupported counts requests answered StatusUnsupported.
	Unsupported atomic.Uint64
	// Dropped counts chains with no writable byte for the status, returned
	// to the driver with nothing written.
	Dropped atomic.Uint64
	// BadChains counts chains the queue rejected (a *virtio.QueueError),
	// returned to the driver unused.
	BadChains atomic.Uint64
	// QueueBroken counts times the queue broke and the device asked for
	// DEVICE_NEEDS_RESET.
	QueueBroken atomic.Uint64
	// Overruns counts notifications that stopped after serving
	// 4*QueueSize chains, leaving any further ones for the next
	// notification (a bound against a guest that keeps the device busy).
	Overruns atomic.Uint64
}
