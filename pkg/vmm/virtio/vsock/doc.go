// SPDX-License-Identifier: Apache-2.0

// Package vsock provides a virtio-vsock device whose host side lives in
// userspace, as Firecracker's does: host code reaches guest sockets with
// [Device.Dial] and [Device.Listen] (net.Conn and net.Listener), and other
// host processes through Firecracker's hybrid Unix-socket protocol
// ([UnixProxy]). No /dev/vhost-vsock is involved.
//
// Specification: virtio 1.2 §5.10 (socket device): three queues (rx, tx,
// event), the guest_cid configuration field, the 44-byte packet header
// ([Header], §5.10.6), stream sockets only, and credit-based flow control
// in both directions (§5.10.6.3). The host has CID 2. Connections are keyed
// by (host port, guest port); host ports for Dial count up from 2^30 as in
// Firecracker.
//
// Flow control and memory bounds: host writes are not buffered: a Write
// returns once the guest's rx buffers hold its bytes, and blocks while the
// guest grants no credit (buf_alloc - (tx_cnt - fwd_cnt)) or posts no rx
// buffers. Each connection advertises Config.BufferSize as buf_alloc and
// holds at most that many unread guest bytes; fwd_cnt advances as host code
// reads, so a slow reader throttles the guest rather than growing memory.
// Connections are bounded by Config.MaxConnections and each listener's
// backlog by Config.Backlog; guest REQUESTs beyond are answered with RST.
// RSTs waiting for rx buffers are bounded too (extra ones are dropped and
// counted).
//
// Trust boundary: every byte on the tx queue comes from the guest and is
// hostile. The header is copied before it is checked; len must fit the
// chain and 64 KiB; src_cid must be the guest's and dst_cid the host's
// (else the packet is dropped and counted); other types than STREAM,
// packets for unknown connections and protocol errors are answered with RST
// (never an RST with an RST); a guest exceeding its credit or sending a
// fwd_cnt that goes backwards or past what was sent is reset or ignored.
// Nothing a guest sends panics or grows memory without bound; every fault
// is counted in [Metrics]. A broken virtqueue sets DEVICE_NEEDS_RESET.
//
// Goroutines: constructors start none.
//
//	| goroutine                      | started by         | stopped by                 | joined in     |
//	|--------------------------------|--------------------|----------------------------|---------------|
//	| device worker, one per device  | Device.Activate    | Device.Reset, Device.Close | Reset, Close  |
//	| deadline timers (AfterFunc)    | Conn.Set*Deadline  | firing: closes a channel   | never block   |
//	| proxy stopper, forward accept  | UnixProxy.Run      | ctx cancel                 | Run           |
//	| proxy splice, two per client   | UnixProxy.Run      | a side closing, ctx cancel | Run           |
//
// The worker alone touches guest memory and the queues: it drains the tx
// queue (at most one queue's worth per pass), fills the rx queue with
// pending packets (RSTs first, then connections round-robin), and expires
// connections waiting for the guest's RST after a host Close. It wakes on
// QueueNotify (which only signals a channel, so the transport may call it
// from any goroutine and it never blocks), on host activity (Dial, Write,
// Read freeing credit, Close) and on close timeouts. There are no
// per-connection goroutines in the device: a blocked Read or Write waits on
// a channel the worker signals.
//
// Locking: Device.mu guards the device and every Conn's and Listener's
// state; the worker holds it while it touches guest memory. A deadline's
// mutex and the UnixProxy's tracker mutex are leaves. Lock order: the
// transport's MMIO.mu, then Device.mu. Reset and Close stop the worker
// before they take Device.mu to tear down, and the worker never takes
// MMIO.mu, so a Reset called under MMIO.mu cannot deadlock with it.
//
// Reset (the driver wrote 0 to the status register) resets every
// connection: blocked and later calls return [ErrDeviceReset], pending Dials
// fail, and Dial returns [ErrNotActive] until the driver activates the
// device again; listeners survive. Close does the same with [ErrClosed] and
// also closes the listeners.
//
// Testing: the tests play the guest driver over package virtiotest's fake
// memory and the real MMIO transport (guest_test.go), so everything runs
// without KVM: go test -race ./pkg/vmm/virtio/vsock/. FuzzPacket in
// fuzz_test.go feeds arbitrary packets to the tx queue.
package vsock
