// SPDX-License-Identifier: Apache-2.0

package vsock

import (
	"io"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// processTxLocked handles at most one queue's worth of chains from the tx
// queue (guest to host), so that a guest refilling it cannot starve the rx
// side. It reports whether chains may remain.
func (d *Device) processTxLocked() bool {
	q := d.txq
	for range int(q.Size()) {
		ch, err := q.Pop()
		if err != nil {
			if d.queueErrLocked(q, err) {
				return false
			}
			continue
		}
		if ch == nil {
			return false
		}
		d.handleTxLocked(ch)
		// The device writes nothing into tx buffers (§5.10.6.2).
		if q.Push(ch.Head, 0) != nil {
			d.broken = true
			return false
		}
	}
	return true
}

// handleTxLocked handles one packet from the guest. The chain is guest
// memory: the header is copied before it is checked, then: the chain holds
// a whole header and len bytes after it, len is at most maxPayload,
// src_cid is the guest's CID and dst_cid the host's, the type is STREAM,
// and the op is valid for the connection's state. Packets failing the
// first checks are dropped and counted; the others are answered with RST.
func (d *Device) handleTxLocked(ch *virtio.Chain) {
	d.m.TxPackets.Add(1)
	var hb [HeaderSize]byte
	if ch.ReadableLen() < HeaderSize {
		d.m.BadPackets.Add(1)
		return
	}
	_, _ = io.ReadFull(ch, hb[:]) // cannot fail: ReadableLen checked
	h := Header(hb[:])
	n := h.Len()
	if n > maxPayload || uint64(n) > ch.Remaining() {
		d.m.BadPackets.Add(1)
		return
	}
	if h.SrcCID() != uint64(d.cfg.GuestCID) || h.DstCID() != HostCID {
		d.m.WrongCID.Add(1)
		return
	}
	key := connKey{local: h.DstPort(), peer: h.SrcPort()}
	op := h.Op()
	if h.Type() != TypeStream {
		d.m.UnknownType.Add(1)
		d.refuseLocked(key, op)
		return
	}
	if op == OpRequest {
		d.handleRequestLocked(h, key)
		return
	}
	c := d.conns[key]
	if c == nil {
		d.m.UnknownConn.Add(1)
		d.refuseLocked(key, op)
		return
	}
	c.peerCreditLocked(h)
	switch op {
	case OpResponse:
		if c.state != stateConnecting {
			d.m.UnknownOp.Add(1)
			d.protocolErrorLocked(c)
			return
		}
		c.state = stateEstablished
		d.m.ConnsOpened.Add(1)
		close(c.connected)
	case OpRW:
		d.handleRWLocked(c, ch, n)
	case OpShutdown:
		c.peerShut |= h.Flags() & shutdownBoth
		if c.state == stateClosing || c.peerShut == shutdownBoth {
			// The guest closed (or answered our close with SHUTDOWN):
			// free the port at once and acknowledge with RST, as Linux
			// does (virtio_transport_recv_connected).
			d.removeLocked(c)
			d.queueRSTLocked(key)
			return
		}
		c.signal()
	case OpRST:
		switch c.state {
		case stateConnecting:
			c.err = ErrConnectionRefused
		case stateEstablished, stateAccepting:
			c.err = ErrConnectionReset
		}
		d.removeLocked(c)
	case OpCreditUpdate:
		// peerCreditLocked took the new credit.
	case OpCreditRequest:
		c.ctl |= ctlCreditUpdate
	default:
		d.m.UnknownOp.Add(1)
	}
	d.scheduleLocked(c)
}

// handleRWLocked moves n payload bytes from ch into c's receive buffer.
func (d *Device) handleRWLocked(c *Conn, ch *virtio.Chain, n uint32) {
	switch {
	case c.state == stateClosing:
		return // the host closed: discard
	case c.state != stateEstablished || c.peerShut&ShutdownSend != 0:
		d.m.UnknownOp.Add(1)
		d.protocolErrorLocked(c)
		return
	case n == 0:
		return
	}
	d.m.TxBytes.Add(uint64(n))
	if c.localShut&ShutdownRecv != 0 || c.closed {
		// Nobody will read: consume at once so the guest's credit flows.
		c.fwdCnt += n
		return
	}
	if uint64(len(c.rbuf))+uint64(n) > uint64(d.cfg.BufferSize) {
		// §5.10.6.3: the driver must not send more than buf_alloc -
		// (tx_cnt - fwd_cnt); holding it would grow without bound.
		d.m.CreditViolations.Add(1)
		d.protocolErrorLocked(c)
		return
	}
	buf := c.growRxLocked(int(n))
	_, _ = io.ReadFull(ch, buf) // cannot fail: Remaining checked
	c.signal()
}

// handleRequestLocked handles a guest connect to host port key.local. It
// refuses with RST when no listener takes the port, its backlog is full or
// the device holds MaxConnections connections.
func (d *Device) handleRequestLocked(h Header, key connKey) {
	if old := d.conns[key]; old != nil {
		// A REQUEST on a connection already in use: the guest lost track
		// of it. Reset both ends.
		d.m.UnknownOp.Add(1)
		d.protocolErrorLocked(old)
		d.m.ConnsRefused.Add(1)
		return
	}
	l := d.listeners[key.local]
	if l == nil {
		l = d.fallback
	}
	switch {
	case l == nil || l.closed || len(l.pending) >= d.cfg.Backlog:
		d.m.ConnsRefused.Add(1)
		d.queueRSTLocked(key)
		return
	case len(d.conns) >= d.cfg.MaxConnections:
		d.m.ConnLimit.Add(1)
		d.m.ConnsRefused.Add(1)
		d.queueRSTLocked(key)
		return
	}
	st := stateEstablished
	if l.deferred {
		st = stateAccepting // the acceptor decides; see acceptLocked
	}
	c := d.addConnLocked(key, st)
	c.peerCreditLocked(h)
	if st == stateEstablished {
		c.ctl |= ctlResponse
		d.m.ConnsOpened.Add(1)
		d.scheduleLocked(c)
	}
	c.backlog = l
	l.pending = append(l.pending, c)
	l.signal()
}

// refuseLocked answers a packet that has no connection with RST, except an
// RST itself (§5.10.6.4: never answer RST with RST, or two peers loop).
func (d *Device) refuseLocked(key connKey, op Op) {
	if op != OpRST {
		d.queueRSTLocked(key)
	}
}

// protocolErrorLocked resets c after the guest broke the protocol; the
// caller counts why.
func (d *Device) protocolErrorLocked(c *Conn) {
	if c.err == nil {
		c.err = ErrConnectionReset
	}
	d.removeLocked(c)
	d.queueRSTLocked(c.key)
}
