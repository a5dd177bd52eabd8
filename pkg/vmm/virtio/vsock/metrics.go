// SPDX-License-Identifier: Apache-2.0

package vsock

import "sync/atomic"

// Metrics counts traffic and guest faults for one device instance. All
// fields are safe for concurrent use; the zero value is ready to use.
type Metrics struct {
	// TxPackets counts packets the guest sent (tx queue chains handled).
	TxPackets atomic.Uint64
	// RxPackets counts packets the device delivered to the guest.
	RxPackets atomic.Uint64
	// TxBytes counts payload bytes received from the guest.
	TxBytes atomic.Uint64
	// RxBytes counts payload bytes delivered to the guest.
	RxBytes atomic.Uint64

	// ConnsOpened counts connections established, in either direction.
	ConnsOpened atomic.Uint64
	// ConnsRefused counts guest REQUESTs answered with RST: no listener,
	// full backlog, or the connection limit.
	ConnsRefused atomic.Uint64
	// ConnLimit counts guest REQUESTs refused because the device held
	// Config.MaxConnections connections.
	ConnLimit atomic.Uint64
	// Active is the number of connections the device holds now.
	Active atomic.Int64

	// BadPackets counts tx chains dropped for a short header, a len larger
	// than the chain or than the largest packet, or a zero-length chain.
	BadPackets atomic.Uint64
	// WrongCID counts packets dropped because src_cid was not the guest's
	// CID or dst_cid not the host's.
	WrongCID atomic.Uint64
	// UnknownType counts packets of a socket type other than STREAM.
	UnknownType atomic.Uint64
	// UnknownOp counts packets with an operation the device does not know
	// or that is invalid in the connection's state.
	UnknownOp atomic.Uint64
	// UnknownConn counts packets for connections the device does not hold.
	UnknownConn atomic.Uint64
	// CreditViolations counts RW packets beyond the credit the device
	// granted; the connection is reset.
	CreditViolations atomic.Uint64
	// BadCredit counts packets whose fwd_cnt went backwards or past the
	// bytes sent; the value is ignored.
	BadCredit atomic.Uint64
	// RSTSent counts RST packets delivered to the guest.
	RSTSent atomic.Uint64
	// RSTDropped counts RSTs not sent because the pending-RST queue was
	// full (a flood of bad packets).
	RSTDropped atomic.Uint64
	// SmallRxBuffers counts rx chains too small for a header, returned
	// unused.
	SmallRxBuffers atomic.Uint64
	// QueueErrors counts chains the virtqueue rejected (virtio.QueueError).
	QueueErrors atomic.Uint64
	// NeedsReset counts times the device asked the driver to reset it
	// because a queue broke.
	NeedsReset atomic.Uint64
}
