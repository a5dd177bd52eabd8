// SPDX-License-Identifier: Apache-2.0

// Package netdev provides a virtio network device that moves Ethernet
// frames between the guest and a host-side [Backend] (the user-mode network
// stack in pkg/netstack, wired by pkg/sandbox; netdev imports neither).
// The package is not called net to avoid clashing with the standard
// library.
//
// Specification: virtio 1.2 §5.1 (network device): device ID 1, one queue
// pair (receiveq1 = 0, transmitq1 = 1; no control queue, no multiqueue),
// the configuration space of §5.1.4 (mac, status, mtu), and the 12-byte
// virtio_net_hdr of §5.1.6 ([Header]), which VERSION_1 always uses. The
// device offers VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS (link up unless
// [Device.SetLink] says otherwise), VIRTIO_NET_F_MAC when Config.MAC is
// set, and the split-queue features of package virtio (indirect
// descriptors, event-index suppression). It offers no checksum or
// segmentation offload and no mergeable rx buffers: the guest sends
// complete, checksummed frames of at most MTU+18 bytes, and each received
// frame fills one rx chain whose header is zero but num_buffers = 1
// (§5.1.6.4.1).
//
// Flow control and memory bounds: guest frames are taken at most one
// queue's worth per worker pass and handed to the backend as fresh copies;
// a slow backend slows the worker, which stops taking tx chains, so the
// guest's tx ring fills and its driver stops the queue. Host frames wait
// in a ring of Config.RxQueueLen frames for guest rx buffers: [Device.Deliver]
// never blocks and drops (counting) when the ring is full,
// [Device.DeliverContext] waits for room until its context ends. While the
// device is not active, host frames are refused ([ErrNotActive]). Memory
// held is bounded by RxQueueLen + QueueSize frames of MTU+18 bytes.
//
// Trust boundary: every descriptor and byte on both queues is written by
// the guest, which may change them while the device reads. Chains are
// walked by [virtio.Queue], which checks them against guest RAM. For tx the
// device takes the chain length once and checks it before allocating (at
// least 12+14 bytes, at most 12+MTU+18), copies the header before checking
// it (no NEEDS_CSUM, no GSO type: they were not negotiated), and copies the
// frame once. For rx it writes only the chain's writable part and returns
// a chain too small for the header and frame unused. Bad frames are
// dropped, bad chains returned unused, and each is counted in [Metrics];
// a broken queue sets DEVICE_NEEDS_RESET and stops the device until the
// driver resets it. Nothing the guest does panics the device or grows
// memory without bound.
//
// Goroutines: constructors start none.
//
//	| goroutine                     | started by      | stopped by                 | joined in    |
//	|-------------------------------|-----------------|----------------------------|--------------|
//	| device worker, one per device | Device.Activate | Device.Reset, Device.Close | Reset, Close |
//
// The worker alone touches guest memory and the queues. A pass drains the
// tx queue, fills rx buffers with queued host frames, then, with no lock
// held, signals the guest and calls Backend.WriteFrame for each guest
// frame. It wakes on QueueNotify (which only signals a channel, so it never
// blocks a vCPU), on Deliver, and on itself when a pass stopped at its
// bound. Deliver and DeliverContext run on the caller's goroutine and only
// touch the rx ring.
//
// Locking: Device.mu guards the device state and the queues; the worker
// holds it while it touches guest memory. Device.rxMu guards the ring of
// host frames. Lock order: the transport's MMIO.mu, then Device.mu, then
// Device.rxMu. Reset and Close stop the worker before they take Device.mu
// to tear down, and the worker never takes MMIO.mu, so a Reset called
// under MMIO.mu cannot deadlock with it.
//
// Testing: the tests play the guest driver over package virtiotest's fake
// memory and the real MMIO transport, so everything runs without KVM:
// go test -race ./pkg/vmm/virtio/netdev/. FuzzTx in fuzz_test.go posts
// arbitrary descriptor chains and bytes on the tx queue; run it with
// go test -run='^$' -fuzz=FuzzTx ./pkg/vmm/virtio/netdev/.
package netdev
