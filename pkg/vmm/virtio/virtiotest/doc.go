// SPDX-License-Identifier: Apache-2.0

// Package virtiotest provides fakes for testing virtio device models without
// a guest: guest memory over a Go slice, a [Driver] that plays the guest side
// of one split virtqueue (lays the queue out, posts descriptor chains with
// readable, writable and indirect buffers, reads the used ring), a helper
// that runs the virtio-mmio initialisation handshake ([Init]), and an
// [Interrupt] that counts signals.
//
// Specification: virtio 1.2 §2.7 (split virtqueues, driver side) and
// §3.1.1 / §4.2.3 (driver initialisation over MMIO).
//
// Trust boundary: none; this is test code that plays the hostile guest. Its
// raw accessors ([Driver.SetDesc], [Driver.SetAvailIdx], [Driver.Publish])
// write whatever they are given, so tests can build malformed queues.
//
// Goroutines: none. A Driver is not safe for concurrent use.
//
// Testing: the package is exercised by the tests of package virtio.
package virtiotest
