// SPDX-License-Identifier: Apache-2.0

package p9

import "sync/atomic"

// Metrics counts one device's messages and the guest faults it met. All
// fields are safe for concurrent use.
type Metrics struct {
	// Requests counts messages forwarded to the 9P server.
	Requests atomic.Uint64
	// Replies counts chains that got a reply written.
	Replies atomic.Uint64
	// BadRequests counts chains returned unused because their message
	// was malformed: shorter than a 9P header, a size field that is not
	// within the readable part or above the negotiated msize, or no room
	// for a reply header.
	BadRequests atomic.Uint64
	// DuplicateTags counts requests refused because a request with the
	// same tag was still pending.
	DuplicateTags atomic.Uint64
	// UnknownTags counts replies dropped because no pending request had
	// their tag (a request the device refused, or one dropped by Reset).
	UnknownTags atomic.Uint64
	// Oversize counts replies longer than the negotiated msize or the
	// chain's writable space; the chain is returned with no bytes.
	Oversize atomic.Uint64
	// BadChains counts chains the queue rejected (a *virtio.QueueError),
	// returned to the driver unused.
	BadChains atomic.Uint64
	// QueueBroken counts times the queue broke or the 9P session ended
	// under the device, and the device asked for DEVICE_NEEDS_RESET.
	QueueBroken atomic.Uint64
	// Overruns counts notifications that stopped after forwarding
	// maxChainsPerNotify chains, leaving the rest for the next one.
	Overruns atomic.Uint64
}
