// SPDX-License-Identifier: Apache-2.0

package netdev

import (
	"context"
	"errors"
)

// Host frames wait in a ring of Config.RxQueueLen slots until the guest
// posts rx buffers. Deliver never blocks: when the ring is full it drops
// the frame, as a NIC whose ring is full does, and the sender (a TCP stack)
// recovers by retransmitting. DeliverContext is for a sender that prefers
// to wait for room. While the device is not active (before DRIVER_OK,
// after a reset or a broken queue) frames are refused, so nothing stale
// reaches a rebooted guest and no memory is held for a guest that is not
// listening.

// Deliver queues a copy of one Ethernet frame (no FCS, no virtio_net_hdr,
// 14 to MaxFrameLen bytes) for the guest and returns without waiting; the
// caller may reuse frame. The worker writes it into the guest's next rx
// buffer, prefixed with a virtio_net_hdr that asks for nothing (zero but
// num_buffers 1). It fails, dropping the frame and counting it, with
// ErrFrameSize for a bad length, ErrQueueFull when Config.RxQueueLen
// frames already wait, ErrNotActive while the device is not active, and
// ErrClosed after Close. Safe for concurrent use.
func (d *Device) Deliver(frame []byte) error {
	f, err := d.copyFrame(frame)
	if err != nil {
		return err
	}
	d.rxMu.Lock()
	err = d.enqueueLocked(f)
	d.rxMu.Unlock()
	d.countDeliver(err)
	return err
}

// DeliverContext is Deliver, but when the rx queue is full it waits for
// room until ctx is done, returning ctx.Err() (the frame is then dropped
// and counted in Metrics.RxDropsQueueFull). A reset or Close while it waits
// makes it return ErrNotActive or ErrClosed. It does not wait for the
// device to become active.
func (d *Device) DeliverContext(ctx context.Context, frame []byte) error {
	f, err := d.copyFrame(frame)
	if err != nil {
		return err
	}
	for {
		d.rxMu.Lock()
		err := d.enqueueLocked(f)
		space := d.rxSpace
		d.rxMu.Unlock()
		if !errors.Is(err, ErrQueueFull) {
			d.countDeliver(err)
			return err
		}
		select {
		case <-ctx.Done():
			d.m.RxDropsQueueFull.Add(1)
			return ctx.Err()
		case <-space:
		}
	}
}

// copyFrame checks a host frame's length and returns a copy.
func (d *Device) copyFrame(frame []byte) ([]byte, error) {
	if len(frame) < EthernetHeaderLen || len(frame) > d.maxFrame {
		d.m.RxDropsSize.Add(1)
		return nil, ErrFrameSize
	}
	return append([]byte(nil), frame...), nil
}

// countDeliver counts the outcome of enqueueLocked other than a full queue
// (which DeliverContext may retry) and wakes the worker for a queued frame.
func (d *Device) countDeliver(err error) {
	switch {
	case err == nil:
		d.wake()
	case errors.Is(err, ErrQueueFull):
		d.m.RxDropsQueueFull.Add(1)
	default:
		d.m.RxDropsNotActive.Add(1)
	}
}

// enqueueLocked appends f to the ring if the rx path is open and has room.
func (d *Device) enqueueLocked(f []byte) error {
	switch {
	case d.rxClosed:
		return ErrClosed
	case !d.rxOpen:
		return ErrNotActive
	case d.rxCount == len(d.rxRing):
		return ErrQueueFull
	}
	d.rxRing[(d.rxHead+d.rxCount)%len(d.rxRing)] = f
	d.rxCount++
	return nil
}

// peekRx returns the oldest queued host frame, or nil.
func (d *Device) peekRx() []byte {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	if d.rxCount == 0 {
		return nil
	}
	return d.rxRing[d.rxHead]
}

// popRx removes the oldest queued host frame, which peekRx returned: only
// the worker removes frames, and it runs one pass at a time.
func (d *Device) popRx() {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	d.rxRing[d.rxHead] = nil
	d.rxHead = (d.rxHead + 1) % len(d.rxRing)
	d.rxCount--
}

// signalSpaceLocked wakes DeliverContext callers waiting for room or for
// a change of state.
func (d *Device) signalSpaceLocked() {
	close(d.rxSpace)
	d.rxSpace = make(chan struct{})
}

// closeRx refuses further host frames until the next Activate and drops
// those queued, counting them in RxDropsNotActive.
func (d *Device) closeRx() {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	d.m.RxDropsNotActive.Add(uint64(d.rxCount))
	clear(d.rxRing)
	d.rxHead, d.rxCount = 0, 0
	d.rxOpen = false
	d.signalSpaceLocked()
}

// processRxLocked writes queued host frames into guest rx buffers (host to
// guest) until none is queued or the driver has no buffers left; the
// driver's next rx notification resumes it. It pops at most one queue's
// worth of chains, so that a guest posting bad chains from another vCPU
// cannot hold the worker (and a Reset waiting for it) forever, and reports
// whether it stopped for that reason. A chain is popped only for a
// frame in hand, so an idle device holds no guest buffer. Each chain's
// device-writable part, in whatever descriptors the guest split it
// (§2.6.4), gets the virtio_net_hdr and the frame; readable descriptors in
// an rx chain are ignored. A chain too small for both is returned unused
// and the frame is dropped (RxDropsSmallBuffer): keeping the frame for a
// bigger buffer would let a guest posting tiny buffers stall the queue,
// and a well-behaved driver sizes every buffer for the MTU (§5.1.6.3.1).
func (d *Device) processRxLocked() (more bool) {
	q := d.rxq
	hdr := NewHeader()
	popped := false
	defer func() {
		if popped {
			d.rxMu.Lock()
			d.signalSpaceLocked()
			d.rxMu.Unlock()
		}
	}()
	for range int(q.Size()) {
		f := d.peekRx()
		if f == nil {
			return false
		}
		ch, err := q.Pop()
		if err != nil {
			if d.queueErrLocked(q, err) {
				return false
			}
			continue
		}
		if ch == nil {
			return false // no buffers: wait for the driver
		}
		d.popRx()
		popped = true
		if ch.WritableLen() < uint64(HeaderSize+len(f)) {
			d.m.RxDropsSmallBuffer.Add(1)
			if q.Push(ch.Head, 0) != nil {
				d.broken = true
				return false
			}
			continue
		}
		_, _ = ch.Write(hdr) // cannot fail: WritableLen checked
		_, _ = ch.Write(f)
		if q.Push(ch.Head, ch.Written()) != nil {
			d.broken = true
			return false
		}
		d.m.RxPackets.Add(1)
		d.m.RxBytes.Add(uint64(len(f)))
	}
	return true
}
