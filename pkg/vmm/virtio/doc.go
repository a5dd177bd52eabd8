// SPDX-License-Identifier: Apache-2.0

// Package virtio provides the core shared by all virtio devices: the [Device]
// interface a device model implements, split virtqueues with a descriptor
// [Chain] walker, and the virtio-mmio transport ([MMIO]).
//
// Specification: Virtual I/O Device (VIRTIO) Version 1.2. Device status
// (§2.1), feature bits (§2.2, §6), split virtqueues (§2.7) including indirect
// descriptors (§2.7.5.3) and used-buffer notification suppression with
// VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10), and the MMIO transport in its modern
// form, version 2 (§4.2.2). Legacy (version 1) MMIO and packed virtqueues are
// not implemented and never offered.
//
// Trust boundary: everything written by the guest is hostile: register
// values, descriptor tables, ring indices, buffer addresses and lengths, and
// buffer contents, which the guest may change while the device reads them.
// Every index is checked against the queue size, every buffer against guest
// RAM (package memory), chains are bounded in length, and a descriptor table
// is snapshotted once per chain. A guest fault never panics and never ends
// the VMM: a broken chain is reported as a [*QueueError], a broken queue as
// [ErrQueueBroken], a bad register access is ignored; each is counted in
// [Metrics]. A device that cannot continue calls
// [Interrupt.SignalNeedsReset], which sets DEVICE_NEEDS_RESET (§2.1.2).
//
// Goroutines: none. The transport is driven by the VMM's vCPU goroutines
// (MMIO exits) and by device goroutines (interrupts). [MMIO] serialises
// register accesses with one mutex and calls [Device] methods while holding
// it; the [Interrupt] it hands to a device uses only atomics, so a device may
// signal from any goroutine, including from inside Activate. Lock order:
// MMIO.mu, then any lock inside the device. A [Queue] is not safe for
// concurrent use: one device goroutine owns each queue.
//
// Testing: package virtiotest provides fake guest memory and a driver that
// plays the guest (lays out queues, posts chains, reads the used ring, runs
// the MMIO handshake). go test ./pkg/vmm/virtio/... runs the unit tests;
// the fuzz targets FuzzChainWalk and FuzzMMIORegisters live in fuzz_test.go.
package virtio
