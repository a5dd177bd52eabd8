// SPDX-License-Identifier: Apache-2.0

package fuse

import "sync/atomic"

// Metrics counts one server's requests and the guest faults it refused.
// All fields are safe for concurrent use.
type Metrics struct {
	// Requests counts calls to Serve.
	Requests atomic.Uint64
	// Errors counts requests answered with an error.
	Errors atomic.Uint64
	// BadRequests counts malformed requests: a short or inconsistent
	// header or body, a request before INIT, an unknown node id.
	BadRequests atomic.Uint64
	// BadNames counts names refused by the single-component check ("",
	// ".", "..", '/', over 255 bytes); each is also an error reply.
	BadNames atomic.Uint64
	// ReadOnlyRejects counts requests refused with EROFS.
	ReadOnlyRejects atomic.Uint64
	// Unsupported counts requests with an unknown opcode (ENOSYS).
	Unsupported atomic.Uint64
}
