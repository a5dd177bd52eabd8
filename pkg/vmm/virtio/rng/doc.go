// SPDX-License-Identifier: Apache-2.0

// Package rng provides a virtio entropy device: the guest's hwrng driver
// posts writable buffers and the device fills them from crypto/rand.
//
// Specification: virtio 1.2 §5.4 (entropy device): device ID 4, one request
// queue (requestq), no feature bits of its own and no configuration space.
// The device also offers the split-queue features of package virtio
// (indirect descriptors, event-index suppression).
//
// Trust boundary: every descriptor comes from the guest. Chains are walked
// by [virtio.Queue], which checks them against guest RAM; the device only
// writes into the writable buffers it was given, ignores readable ones, and
// fills at most [MaxRequestBytes] per request and 4*QueueSize requests per
// notification, so a guest that aliases many huge descriptors onto the same
// RAM, or keeps posting, cannot make one notification run for long. A bad
// chain is returned unused and counted; a broken queue sets
// DEVICE_NEEDS_RESET. Nothing the guest does panics the device.
//
// Goroutines: none. Requests are served synchronously inside QueueNotify on
// the caller's goroutine (a vCPU). Device methods are safe for concurrent
// use; one mutex serialises them, and interrupts are signalled after it is
// released.
//
// Testing: go test ./pkg/vmm/virtio/rng/ drives the device through the
// virtio-mmio transport with the fake guest of package virtiotest.
package rng
