// SPDX-License-Identifier: Apache-2.0

package fs

import "sync/atomic"

// Metrics counts one device's requests and the guest faults it met. All
// fields are safe for concurrent use. The FUSE-level counters are the
// server's (fuse.Server.Metrics).
type Metrics struct {
	// Requests counts chains handed to the backend.
	Requests atomic.Uint64
	// Replies counts chains that got a reply written.
	Replies atomic.Uint64
	// Oversize counts chains whose readable part is longer than
	// fuse.MaxRequestSize; the server reads no further than the request
	// header's length, and refuses lengths past MaxRequestSize.
	Oversize atomic.Uint64
	// BadChains counts chains the queue rejected (a *virtio.QueueError),
	// returned to the driver unused.
	BadChains atomic.Uint64
	// QueueBroken counts times a queue broke and the device asked for
	// DEVICE_NEEDS_RESET.
	QueueBroken atomic.Uint64
	// Overruns counts notifications that stopped after serving
	// maxChainsPerNotify chains, leaving the rest for the next one.
	Overruns atomic.Uint64
}
