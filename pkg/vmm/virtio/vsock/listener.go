// SPDX-License-Identifier: Apache-2.0

package vsock

import (
	"context"
	"fmt"
	"math"
	"net"
)

// Dial connects to port on the guest (host-initiated connect, §5.10.6.5):
// it sends REQUEST and waits for the guest's RESPONSE. The returned
// net.Conn is a *Conn. The wait is bounded by ctx; a guest that answers RST
// gives an error wrapping ErrConnectionRefused. Dial fails with ErrNotActive
// before the driver has activated the device.
func (d *Device) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("vsock: dial port %d: %w", port, err)
	}
	d.mu.Lock()
	switch {
	case d.closed:
		d.mu.Unlock()
		return nil, fmt.Errorf("vsock: dial port %d: %w", port, ErrClosed)
	case !d.active:
		d.mu.Unlock()
		return nil, fmt.Errorf("vsock: dial port %d: %w", port, ErrNotActive)
	case len(d.conns) >= d.cfg.MaxConnections:
		d.mu.Unlock()
		return nil, fmt.Errorf("vsock: dial port %d: %w", port, ErrTooManyConnections)
	}
	key := connKey{local: d.allocPortLocked(port), peer: port}
	c := d.addConnLocked(key, stateConnecting)
	c.ctl |= ctlRequest
	d.scheduleLocked(c)
	d.mu.Unlock()
	d.wake()

	select {
	case <-c.connected:
	case <-ctx.Done():
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case c.state == stateEstablished:
		return c, nil
	case c.state == stateConnecting:
		// Cancelled: the guest may have seen the REQUEST, so reset it.
		d.removeLocked(c)
		d.queueRSTLocked(key)
		d.wake()
		return nil, fmt.Errorf("vsock: dial port %d: %w", port, ctx.Err())
	case c.err != nil:
		return nil, fmt.Errorf("vsock: dial port %d: %w", port, c.err)
	}
	return nil, fmt.Errorf("vsock: dial port %d: %w", port, ErrConnectionReset)
}

// allocPortLocked returns a host port for a connection to guest port peer
// that no held connection uses, counting up from ephemeralBase. At most
// MaxConnections keys are taken, so the search ends.
func (d *Device) allocPortLocked(peer uint32) uint32 {
	for {
		p := d.nextPort
		d.nextPort++
		if d.nextPort == math.MaxUint32 {
			d.nextPort = ephemeralBase // 0xffffffff is VMADDR_PORT_ANY
		}
		if _, used := d.conns[connKey{local: p, peer: peer}]; !used {
			return p
		}
	}
}

// Listen accepts guest connections to host port port (guest-initiated
// connect, §5.10.6.5). The returned net.Listener is a *Listener. Guest
// REQUESTs beyond Config.Backlog waiting connections are refused with RST.
// Listeners survive device resets.
func (d *Device) Listen(port uint32) (net.Listener, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("vsock: listen port %d: %w", port, ErrClosed)
	}
	if _, ok := d.listeners[port]; ok {
		return nil, fmt.Errorf("vsock: listen port %d: %w", port, ErrAddrInUse)
	}
	l := newListener(d, port, false)
	d.listeners[port] = l
	return l, nil
}

// listenDeferred registers the listener for guest connects to ports with
// no Listen: their connections wait in stateAccepting, unanswered, until
// the acceptor calls acceptDeferred or Close.
func (d *Device) listenDeferred() (*Listener, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("vsock: forward: %w", ErrClosed)
	}
	if d.fallback != nil {
		return nil, fmt.Errorf("vsock: forward: %w", ErrAddrInUse)
	}
	d.fallback = newListener(d, 0, true)
	return d.fallback, nil
}

// acceptDeferred answers a connection from a deferred listener: RESPONSE,
// so the guest's connect succeeds. It fails if the guest gave up meanwhile.
func (c *Conn) acceptDeferred() error {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.state != stateAccepting {
		if c.err != nil {
			return c.err
		}
		return ErrConnectionReset
	}
	c.state = stateEstablished
	c.ctl |= ctlResponse
	d.m.ConnsOpened.Add(1)
	d.scheduleLocked(c)
	d.wake()
	return nil
}

// Listener accepts guest-initiated connections to one host port. It
// implements net.Listener; its methods are safe for concurrent use.
type Listener struct {
	d        *Device
	port     uint32
	deferred bool          // connections wait in stateAccepting
	sig      chan struct{} // wakes a blocked Accept; buffered for one
	done     chan struct{} // closed by Close

	// Guarded by d.mu.
	closed  bool
	pending []*Conn // waiting for Accept, at most Config.Backlog
}

var _ net.Listener = (*Listener)(nil)

func newListener(d *Device, port uint32, deferred bool) *Listener {
	return &Listener{d: d, port: port, deferred: deferred, sig: make(chan struct{}, 1), done: make(chan struct{})}
}

func (l *Listener) signal() {
	select {
	case l.sig <- struct{}{}:
	default:
	}
}

// Accept implements net.Listener: it waits for the next guest connection
// and returns it as a *Conn. After Close it returns net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	d := l.d
	for {
		d.mu.Lock()
		if l.closed {
			d.mu.Unlock()
			return nil, net.ErrClosed
		}
		if len(l.pending) > 0 {
			c := l.pending[0]
			l.pending[0] = nil
			l.pending = l.pending[1:]
			c.backlog = nil
			if len(l.pending) > 0 {
				l.signal() // another Accept may be waiting
			}
			d.mu.Unlock()
			return c, nil
		}
		d.mu.Unlock()
		select {
		case <-l.sig:
		case <-l.done:
		}
	}
}

// Close implements net.Listener. Connections not yet accepted are reset;
// accepted ones are unaffected. Close is idempotent.
func (l *Listener) Close() error {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	l.closeLocked()
	return nil
}

func (l *Listener) closeLocked() {
	if l.closed {
		return
	}
	d := l.d
	l.closed = true
	close(l.done)
	if d.listeners[l.port] == l && !l.deferred {
		delete(d.listeners, l.port)
	}
	if d.fallback == l {
		d.fallback = nil
	}
	for len(l.pending) > 0 {
		c := l.pending[0]
		c.failLocked(ErrConnectionReset) // removes c from pending
		if d.active {
			d.queueRSTLocked(c.key)
		}
	}
	d.wake()
}

// Addr implements net.Listener: the host's CID (2) and the port.
func (l *Listener) Addr() net.Addr { return Addr{CID: HostCID, Port: l.port} }
