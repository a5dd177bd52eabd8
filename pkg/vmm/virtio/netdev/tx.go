// SPDX-License-Identifier: Apache-2.0

package netdev

import (
	"io"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// processTxLocked takes at most one queue's worth of chains from the tx
// queue (guest to host), so that a guest refilling it cannot starve the rx
// side, and appends the frames to pass on to frames. It reports whether
// chains may remain. Every chain is returned at once with nothing written
// (§5.1.6.2: transmit buffers are device-readable); the frames are copies.
func (d *Device) processTxLocked(frames [][]byte) ([][]byte, bool) {
	q := d.txq
	for range int(q.Size()) {
		ch, err := q.Pop()
		if err != nil {
			if d.queueErrLocked(q, err) {
				return frames, false
			}
			continue
		}
		if ch == nil {
			return frames, false
		}
		if f := d.readFrame(ch); f != nil {
			frames = append(frames, f)
		}
		if q.Push(ch.Head, 0) != nil {
			d.broken = true
			return frames, false
		}
	}
	return frames, true
}

// readFrame copies the Ethernet frame out of a tx chain, or returns nil and
// counts why it dropped it. The chain is guest memory that the guest may
// change meanwhile: its length is taken once, the header is copied before
// it is checked, and the frame is copied once. Checks: the readable part
// holds a virtio_net_hdr and an Ethernet header (else TxDropsShort); the
// frame is at most MTU+18 bytes, checked before anything is allocated
// (else TxDropsTooBig); the header asks for no checksum or segmentation
// offload, which were not negotiated (else TxDropsBadHeader: forwarding
// the frame would send a partial checksum or an unsegmented super-frame).
// Other header fields and flags are ignored (§5.1.6.2.2). Writable
// descriptors in a tx chain are ignored.
func (d *Device) readFrame(ch *virtio.Chain) []byte {
	n := ch.ReadableLen()
	if n < HeaderSize+EthernetHeaderLen {
		d.m.TxDropsShort.Add(1)
		return nil
	}
	n -= HeaderSize
	if n > uint64(d.maxFrame) {
		d.m.TxDropsTooBig.Add(1)
		return nil
	}
	var hb [HeaderSize]byte
	_, _ = io.ReadFull(ch, hb[:]) // cannot fail: ReadableLen checked
	h := Header(hb[:])
	if h.Flags()&HeaderNeedsCsum != 0 || h.GSOType() != GSONone {
		d.m.TxDropsBadHeader.Add(1)
		return nil
	}
	f := make([]byte, n)
	_, _ = io.ReadFull(ch, f) // cannot fail: ReadableLen checked
	return f
}

// send hands one guest frame to the backend and counts the outcome. It is
// called by the worker without locks.
func (d *Device) send(f []byte) {
	if err := d.backend.WriteFrame(f); err != nil {
		d.m.TxDropsBackend.Add(1)
		return
	}
	d.m.TxPackets.Add(1)
	d.m.TxBytes.Add(uint64(len(f)))
}
