// SPDX-License-Identifier: Apache-2.0

package virtio

import "errors"

// Drained reports what Queue.Drain did.
type Drained struct {
	// BadChains counts chains Pop refused (a QueueError with a valid head);
	// each was returned to the driver unused.
	BadChains int
	// Overrun is set when Drain stopped at its limit with chains possibly
	// left; they wait for the next notification.
	Overrun bool
	// Broken is set when the queue can no longer be used: the device should
	// signal NEEDS_RESET.
	Broken bool
}

// Drain serves available chains synchronously until the queue is empty,
// max chains were served, or the queue broke. serve handles one chain and
// returns the number of bytes it wrote, which Drain pushes as the used
// length. A chain Pop refuses is pushed back with length 0, so the driver
// does not leak its descriptors. The caller holds whatever lock guards the
// queue and signals the driver afterwards (NeedsInterrupt, NeedsReset).
//
// The limit keeps a guest that refills the queue as fast as it is drained
// (from another vCPU, or by pointing written buffers at the ring) from
// holding the caller forever.
func (q *Queue) Drain(max int, serve func(*Chain) uint32) Drained {
	var d Drained
	for served := 0; ; served++ {
		if served == max {
			d.Overrun = true
			return d
		}
		c, err := q.Pop()
		if err != nil {
			var qe *QueueError
			if errors.Is(err, ErrQueueBroken) || !errors.As(err, &qe) {
				d.Broken = true
				return d
			}
			d.BadChains++
			if q.Push(qe.Head, 0) != nil {
				d.Broken = true
				return d
			}
			continue
		}
		if c == nil {
			return d
		}
		if q.Push(c.Head, serve(c)) != nil {
			d.Broken = true
			return d
		}
	}
}
