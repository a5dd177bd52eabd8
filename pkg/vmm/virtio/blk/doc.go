// SPDX-License-Identifier: Apache-2.0

// Package blk provides a virtio block device backed by a disk on the host:
// a raw image (a regular file or a block device), or any [Backend], such
// as a qcow2 image served by package qcow2 (pkg/diskimage/qcow2).
//
// Specification: virtio 1.2 §5.2 (block device): device ID 2, one request
// queue, the configuration space of §5.2.4 (capacity, seg_max, blk_size),
// and the requests IN, OUT, FLUSH and GET_ID of §5.2.6; other request types
// are answered VIRTIO_BLK_S_UNSUPP. The device offers VIRTIO_BLK_F_SEG_MAX,
// VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO for a
// read-only disk, and the split-queue features of package virtio (indirect
// descriptors, event-index suppression). The request wire format is in
// request.go.
//
// Trust boundary: every descriptor and every request byte comes from the
// guest, which may change them while the device works. Chains are walked by
// [virtio.Queue], which checks them against guest RAM. The device copies
// each header before decoding it and checks the rest itself: a chain
// without a writable status byte is dropped; a short header, a data length
// that is not a whole number of sectors, a range past the capacity (checked
// without overflow) or a write to a read-only disk is answered
// VIRTIO_BLK_S_IOERR without touching the image. The disk is only read
// and written at offsets inside [0, Capacity()*512), with positioned I/O
// (pread/pwrite) for a raw image, which therefore never grows, and never
// written or synced when read-only. A Backend's own errors (a corrupt
// qcow2 table, say) are answered VIRTIO_BLK_S_IOERR like failed host I/O. Every fault is counted in [Metrics]; a broken queue sets
// DEVICE_NEEDS_RESET. One notification serves at most 4*QueueSize chains,
// so a guest that keeps posting cannot hold a vCPU in the device forever.
// Nothing the guest does panics the device.
//
// Goroutines: none. Requests are served synchronously inside QueueNotify on
// the caller's goroutine (a vCPU or the VMM's event loop), with the
// device's one mutex held, so Reset and Close wait for a request in
// progress. Device methods are safe for concurrent use. Interrupts are
// signalled after the mutex is released.
//
// Testing: go test ./pkg/vmm/virtio/blk/ drives the device through the
// virtio-mmio transport with the fake guest of package virtiotest over a
// temporary raw image, and over a qcow2 image when qemu-img is installed. FuzzRequest in fuzz_test.go posts arbitrary descriptor
// tables and request bytes; run it with
// go test -run='^$' -fuzz=FuzzRequest ./pkg/vmm/virtio/blk/.
package blk
