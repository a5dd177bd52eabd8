// SPDX-License-Identifier: Apache-2.0

package guestagent

import (
	"context"
	"sync"
)

// InitialWindow is each stream's window, per direction, when it opens
// (protocol version 1).
const InitialWindow = 1 << 20

// maxWindow bounds a sender's credit; a peer granting more is broken.
const maxWindow = 1 << 30

// SendWindow is the credit a sender has on one stream. It is safe for
// concurrent use.
type SendWindow struct {
	mu    sync.Mutex // guards avail, err, wake
	avail int64
	err   error
	wake  chan struct{} // closed and replaced when avail grows or err is set
}

// NewSendWindow returns a window with initial bytes of credit.
func NewSendWindow(initial int) *SendWindow {
	return &SendWindow{avail: int64(initial), wake: make(chan struct{})}
}

// Acquire waits until there is credit and takes up to max bytes of it. It
// returns early with the error given to Close, or ctx's error.
func (w *SendWindow) Acquire(ctx context.Context, max int) (int, error) {
	for {
		w.mu.Lock()
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return 0, err
		}
		if w.avail > 0 {
			n := int64(max)
			if n > w.avail {
				n = w.avail
			}
			w.avail -= n
			w.mu.Unlock()
			return int(n), nil
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Return gives back n bytes taken by Acquire but not sent.
func (w *SendWindow) Return(n int) {
	if n <= 0 {
		return
	}
	w.mu.Lock()
	w.avail += int64(n)
	w.signal()
	w.mu.Unlock()
}

// Grant adds a peer's WindowUpdate. The increment is peer-controlled: zero,
// or credit growing past 1 GiB, is a protocol error.
func (w *SendWindow) Grant(n uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n == 0 || w.avail+int64(n) > maxWindow {
		return ProtocolErrorf("window update of %d bytes on top of %d", n, w.avail)
	}
	w.avail += int64(n)
	w.signal()
	return nil
}

// Close makes current and later Acquire calls fail with err. The first
// call wins.
func (w *SendWindow) Close(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
		w.signal()
	}
	w.mu.Unlock()
}

// signal wakes waiters; w.mu must be held.
func (w *SendWindow) signal() {
	close(w.wake)
	w.wake = make(chan struct{})
}

// RecvWindow accounts for the bytes a receiver let its peer send on one
// stream. It is safe for concurrent use.
type RecvWindow struct {
	mu          sync.Mutex // guards outstanding, pending
	size        int64
	outstanding int64 // sent by the peer and not yet granted back
	pending     int64 // consumed, not yet granted back
}

// NewRecvWindow returns a window of size bytes.
func NewRecvWindow(size int) *RecvWindow { return &RecvWindow{size: int64(size)} }

// Receive records n bytes arriving from the peer. More than the window
// allows is a protocol error.
func (w *RecvWindow) Receive(n int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if int64(n) > w.size-w.outstanding {
		return ProtocolErrorf("peer sent %d bytes with %d bytes of window left", n, w.size-w.outstanding)
	}
	w.outstanding += int64(n)
	return nil
}

// Consume records n bytes taken by the local consumer and returns the
// increment to grant the peer now: zero until a quarter of the window has
// been consumed, so updates are batched.
func (w *RecvWindow) Consume(n int) uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending += int64(n)
	if w.pending < w.size/4 {
		return 0
	}
	inc := w.pending
	w.pending = 0
	w.outstanding -= inc
	return uint32(inc)
}

// Unconsume puts back an increment that Consume returned but that could not
// be sent, so that a later Consume grants it.
func (w *RecvWindow) Unconsume(inc uint32) {
	w.mu.Lock()
	w.pending += int64(inc)
	w.outstanding += int64(inc)
	w.mu.Unlock()
}
