// SPDX-License-Identifier: Apache-2.0

package vsock

// processRxLocked fills rx buffers (host to guest) with pending packets:
// first RSTs, then the ready connections round-robin, one packet per turn,
// until nothing is pending or the driver has no buffers left. The driver's
// next notification on the rx queue (or new host data) resumes it.
func (d *Device) processRxLocked() {
	q := d.rxq
	var hb [HeaderSize]byte
	h := Header(hb[:])
	for len(d.rsts) > 0 || len(d.ready) > 0 {
		var c *Conn
		if len(d.rsts) == 0 {
			c = d.ready[0]
			if c.nextOpLocked(1) == OpInvalid {
				d.popReadyLocked()
				continue
			}
		}
		ch, err := q.Pop()
		if err != nil {
			if d.queueErrLocked(q, err) {
				return
			}
			continue
		}
		if ch == nil {
			return // no buffers: wait for the driver
		}
		if ch.WritableLen() < HeaderSize {
			d.m.SmallRxBuffers.Add(1)
			if q.Push(ch.Head, 0) != nil {
				d.broken = true
				return
			}
			continue
		}
		var payload []byte
		if c == nil {
			d.fillHeader(h, d.rsts[0], OpRST)
			d.rsts = d.rsts[1:]
			if len(d.rsts) == 0 {
				d.rsts = nil // let the backing array go
			}
			d.m.RSTSent.Add(1)
		} else {
			payload = c.packetLocked(h, min(ch.Available()-HeaderSize, maxPayload))
			d.popReadyLocked()
			d.scheduleLocked(c) // to the back, if it has more
		}
		_, _ = ch.Write(hb[:])   // cannot fail: WritableLen checked
		_, _ = ch.Write(payload) // cannot fail: payload fits the room
		d.m.RxPackets.Add(1)
		d.m.RxBytes.Add(uint64(len(payload)))
		if q.Push(ch.Head, ch.Written()) != nil {
			d.broken = true
			return
		}
	}
}

// popReadyLocked removes the head of the ready list.
func (d *Device) popReadyLocked() {
	d.ready[0].queued = false
	d.ready[0] = nil
	d.ready = d.ready[1:]
	if len(d.ready) == 0 {
		d.ready = nil // let the backing array go
	}
}

// packetLocked writes c's next packet header into h and returns its
// payload, at most room bytes, advancing c's state. The payload aliases
// the blocked Write's buffer: copy it before unlocking.
func (c *Conn) packetLocked(h Header, room uint64) []byte {
	op := c.nextOpLocked(room)
	c.d.fillHeader(h, c.key, op)
	h.SetFwdCnt(c.fwdCnt)
	c.lastFwdSent = c.fwdCnt
	c.ctl &^= ctlCreditUpdate // every packet carries the credit
	var payload []byte
	switch op {
	case OpRequest:
		c.ctl &^= ctlRequest
	case OpResponse:
		c.ctl &^= ctlResponse
	case OpRW:
		n := min(uint64(len(c.wbuf)), uint64(c.peerFreeLocked()), room)
		payload = c.wbuf[:n]
		c.wbuf = c.wbuf[n:]
		c.wn += int(n)
		c.txCnt += uint32(n)
		h.SetLen(uint32(n))
		if len(c.wbuf) == 0 {
			c.signal()
		}
	case OpCreditRequest:
		c.creditAsked = true
	case OpShutdown:
		c.ctl &^= ctlShutdown
		h.SetFlags(c.localShut)
	}
	return payload
}
