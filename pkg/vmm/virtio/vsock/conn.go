// SPDX-License-Identifier: Apache-2.0

package vsock

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Addr is a vsock address: a context ID and a port.
type Addr struct {
	CID  uint32
	Port uint32
}

var _ net.Addr = Addr{}

// Network implements net.Addr.
func (Addr) Network() string { return "vsock" }

// String implements net.Addr: "cid:port".
func (a Addr) String() string { return fmt.Sprintf("%d:%d", a.CID, a.Port) }

// connState is where a connection is in its life.
type connState uint8

const (
	stateConnecting  connState = iota // host sent REQUEST, awaits RESPONSE
	stateAccepting                    // guest sent REQUEST, a deferred acceptor decides
	stateEstablished                  // data flows
	stateClosing                      // host closed, SHUTDOWN sent, awaits guest RST
	stateDead                         // not in the device's map
)

// Control packets a connection owes the guest (Conn.ctl bits).
const (
	ctlRequest      = 1 << iota // OpRequest (host Dial)
	ctlResponse                 // OpResponse (guest connect accepted)
	ctlShutdown                 // OpShutdown with localShut, after pending data
	ctlCreditUpdate             // OpCreditUpdate
)

// Conn is one vsock stream connection between the host and the guest. It
// implements net.Conn with half-close (CloseWrite, CloseRead). Its methods
// are safe for concurrent use.
//
// Write does not buffer: it returns once the guest's rx queue holds every
// byte, and blocks while the guest grants no credit (§5.10.6.3) or has no
// rx buffers, until the write deadline. Read returns data the guest sent;
// at most Config.BufferSize unread bytes are held.
type Conn struct {
	d   *Device
	key connKey

	connected chan struct{} // closed when stateConnecting ends
	done      chan struct{} // closed by Close
	rsig      chan struct{} // wakes a blocked Read; buffered for one
	wsig      chan struct{} // wakes a blocked Write; buffered for one
	rsem      chan struct{} // one Read at a time
	wsem      chan struct{} // one Write at a time
	rdl, wdl  deadline

	// Guarded by d.mu.
	state         connState
	closed        bool      // Close called
	err           error     // why the device dropped the connection, if it did
	ctl           uint8     // ctl* packets owed to the guest
	queued        bool      // on d.ready
	backlog       *Listener // listener holding it for Accept, if any
	localShut     uint32    // Shutdown* flags the host gave
	peerShut      uint32    // Shutdown* flags the guest gave
	rbuf          []byte    // received, unread; len <= BufferSize
	fwdCnt        uint32    // bytes the host consumed (our fwd_cnt)
	lastFwdSent   uint32    // fwdCnt in the last packet sent
	txCnt         uint32    // bytes sent to the guest
	peerBufAlloc  uint32    // guest's buf_alloc
	peerFwdCnt    uint32    // guest's fwd_cnt
	creditAsked   bool      // CREDIT_REQUEST sent since the last credit info
	wbuf          []byte    // the blocked Write's unsent bytes
	wn            int       // bytes of the blocked Write sent so far
	closeDeadline time.Time // stateClosing: when to give up and RST
}

var _ net.Conn = (*Conn)(nil)

func newConn(d *Device, key connKey, st connState) *Conn {
	return &Conn{
		d:         d,
		key:       key,
		state:     st,
		connected: make(chan struct{}),
		done:      make(chan struct{}),
		rsig:      make(chan struct{}, 1),
		wsig:      make(chan struct{}, 1),
		rsem:      make(chan struct{}, 1),
		wsem:      make(chan struct{}, 1),
		rdl:       makeDeadline(),
		wdl:       makeDeadline(),
	}
}

// LocalAddr implements net.Conn: the host's CID (2) and port.
func (c *Conn) LocalAddr() net.Addr { return Addr{CID: HostCID, Port: c.key.local} }

// RemoteAddr implements net.Conn: the guest's CID and port.
func (c *Conn) RemoteAddr() net.Addr { return Addr{CID: c.d.cfg.GuestCID, Port: c.key.peer} }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wdl.set(t)
	return nil
}

// signal wakes blocked readers and writers to re-check the state.
func (c *Conn) signal() {
	select {
	case c.rsig <- struct{}{}:
	default:
	}
	select {
	case c.wsig <- struct{}{}:
	default:
	}
}

// enter takes sem (one reader or one writer at a time), giving up when the
// connection closes or the deadline passes.
func (c *Conn) enter(sem chan struct{}, dl *deadline) error {
	select {
	case <-c.done:
		return net.ErrClosed
	case <-dl.wait():
		return os.ErrDeadlineExceeded
	default:
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-c.done:
		return net.ErrClosed
	case <-dl.wait():
		return os.ErrDeadlineExceeded
	}
}

// Read implements net.Conn. After the guest shut down its sending side or
// closed, Read returns the data still held and then io.EOF; after the
// guest aborted the connection (RST), it returns the data held and then
// ErrConnectionReset.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.enter(c.rsem, &c.rdl); err != nil {
		return 0, err
	}
	defer func() { <-c.rsem }()
	d := c.d
	for {
		if isClosed(c.rdl.wait()) {
			return 0, os.ErrDeadlineExceeded
		}
		d.mu.Lock()
		n, finished, wake, err := c.readLocked(p)
		d.mu.Unlock()
		if wake {
			d.wake()
		}
		if finished {
			return n, err
		}
		select {
		case <-c.rsig:
		case <-c.done:
		case <-c.rdl.wait():
		}
	}
}

// readLocked does one attempt of Read. finished reports that Read returns
// n, err; wake that the worker has a packet to send.
func (c *Conn) readLocked(p []byte) (n int, finished, wake bool, err error) {
	switch {
	case c.closed:
		return 0, true, false, net.ErrClosed
	case len(c.rbuf) > 0:
		n = copy(p, c.rbuf)
		c.rbuf = c.rbuf[n:]
		if len(c.rbuf) == 0 {
			c.rbuf = nil // drop the buffer; the next packet allocates
		}
		c.fwdCnt += uint32(n)
		return n, true, c.creditAfterReadLocked(), nil
	case len(p) == 0:
		return 0, true, false, nil
	case c.localShut&ShutdownRecv != 0, c.peerShut&ShutdownSend != 0:
		return 0, true, false, io.EOF
	case c.err != nil:
		return 0, true, false, c.err
	case c.state == stateDead:
		return 0, true, false, io.EOF
	}
	return 0, false, false, nil
}

// creditAfterReadLocked decides whether to tell the guest about the space a
// read freed: when the guest believes less than half the buffer is free,
// so a guest blocked on credit always hears of it. It reports whether a
// packet was scheduled.
func (c *Conn) creditAfterReadLocked() bool {
	if c.state != stateEstablished {
		return false
	}
	size := c.d.cfg.BufferSize
	received := c.fwdCnt + uint32(len(c.rbuf))
	if unseen := received - c.lastFwdSent; unseen < size && size-unseen >= size/2 {
		return false // the guest believes at least half the buffer is free
	}
	c.ctl |= ctlCreditUpdate
	c.d.scheduleLocked(c)
	return true
}

// Write implements net.Conn. It returns when the guest's rx queue holds all
// of p, or with the number of bytes delivered and an error: the write
// deadline passed (os.ErrDeadlineExceeded), the connection was closed
// (net.ErrClosed), shut down (ErrShutdown) or reset.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.enter(c.wsem, &c.wdl); err != nil {
		return 0, err
	}
	defer func() { <-c.wsem }()
	d := c.d
	d.mu.Lock()
	if err := c.writeErrLocked(); err != nil {
		d.mu.Unlock()
		return 0, err
	}
	if len(p) == 0 {
		d.mu.Unlock()
		return 0, nil
	}
	c.wbuf, c.wn = p, 0
	d.scheduleLocked(c)
	d.mu.Unlock()
	d.wake()
	for {
		timedOut := false
		select {
		case <-c.wsig:
		case <-c.done:
		case <-c.wdl.wait():
			timedOut = true
		}
		d.mu.Lock()
		n := c.wn
		err := c.writeErrLocked()
		if err == nil && len(c.wbuf) > 0 && timedOut {
			err = os.ErrDeadlineExceeded
		}
		if len(c.wbuf) == 0 || err != nil {
			// Detach p under the lock: the worker copies from it only
			// while holding the lock. A SHUTDOWN may have waited for it.
			c.wbuf, c.wn = nil, 0
			d.scheduleLocked(c)
			d.mu.Unlock()
			d.wake()
			return n, err
		}
		d.mu.Unlock()
	}
}

// writeErrLocked returns why a Write cannot proceed, or nil.
func (c *Conn) writeErrLocked() error {
	switch {
	case c.closed:
		return net.ErrClosed
	case c.localShut&ShutdownSend != 0:
		return ErrShutdown
	case c.err != nil:
		return c.err
	case c.peerShut&ShutdownRecv != 0, c.state != stateEstablished:
		return ErrShutdown
	}
	return nil
}

// CloseWrite shuts down the sending side: the guest reads EOF once it has
// the data already written. Later Writes fail with ErrShutdown.
func (c *Conn) CloseWrite() error { return c.shutdown(ShutdownSend) }

// CloseRead shuts down the receiving side: data held or arriving later is
// discarded and Read returns io.EOF.
func (c *Conn) CloseRead() error { return c.shutdown(ShutdownRecv) }

func (c *Conn) shutdown(flag uint32) error {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if c.localShut&flag != 0 {
		return nil
	}
	c.localShut |= flag
	if flag == ShutdownRecv {
		c.fwdCnt += uint32(len(c.rbuf))
		c.rbuf = nil
	}
	if c.state == stateEstablished {
		c.ctl |= ctlShutdown
		d.scheduleLocked(c)
		d.wake()
	}
	c.signal()
	return nil
}

// Close implements net.Conn. It discards unread data, tells the guest
// (SHUTDOWN in both directions) and frees the port when the guest answers
// with RST or after Config.CloseTimeout. Blocked Read and Write calls return
// net.ErrClosed. Close is idempotent.
func (c *Conn) Close() error {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	c.rbuf, c.wbuf = nil, nil // a blocked Write returns net.ErrClosed
	switch c.state {
	case stateEstablished:
		c.localShut = shutdownBoth
		c.ctl = ctlShutdown
		c.state = stateClosing
		c.closeDeadline = time.Now().Add(d.cfg.CloseTimeout)
		d.closing = append(d.closing, c)
		d.scheduleLocked(c)
		d.wake()
	case stateConnecting, stateAccepting:
		d.removeLocked(c)
		if d.active {
			d.queueRSTLocked(c.key)
			d.wake()
		}
	}
	return nil
}

// failLocked drops the connection because of err (device reset or close).
func (c *Conn) failLocked(err error) {
	if c.err == nil {
		c.err = err
	}
	c.d.removeLocked(c)
}

// peerCreditLocked takes the guest's credit information from a header it
// sent (every packet carries it, §5.10.6.3). fwd_cnt comes from the guest:
// one that goes backwards or claims more bytes than were sent is ignored
// and counted, so it cannot make tx_cnt - fwd_cnt wrap into credit.
func (c *Conn) peerCreditLocked(h Header) {
	c.peerBufAlloc = h.BufAlloc()
	if fwd := h.FwdCnt(); c.txCnt-fwd <= c.txCnt-c.peerFwdCnt {
		c.peerFwdCnt = fwd
	} else {
		c.d.m.BadCredit.Add(1)
	}
	c.creditAsked = false
	if len(c.wbuf) > 0 {
		c.d.scheduleLocked(c)
	}
}

// peerFreeLocked returns how many bytes the guest can take now:
// buf_alloc - (tx_cnt - fwd_cnt) (§5.10.6.3). The values come from the
// guest; the free-running counters wrap, and a fwd_cnt ahead of what was
// sent or a count above buf_alloc means no credit rather than an overflow.
func (c *Conn) peerFreeLocked() uint32 {
	inFlight := c.txCnt - c.peerFwdCnt
	if inFlight > c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inFlight
}

// nextOpLocked returns the packet c would send into an rx buffer with room
// payload bytes, or OpInvalid if none.
func (c *Conn) nextOpLocked(room uint64) Op {
	switch c.state {
	case stateConnecting:
		if c.ctl&ctlRequest != 0 {
			return OpRequest
		}
		return OpInvalid
	case stateEstablished, stateClosing:
	default:
		return OpInvalid
	}
	if c.ctl&ctlResponse != 0 {
		return OpResponse
	}
	if len(c.wbuf) > 0 && c.state == stateEstablished && c.peerShut&ShutdownRecv == 0 {
		if c.peerFreeLocked() > 0 {
			if room > 0 {
				return OpRW
			}
		} else if !c.creditAsked {
			return OpCreditRequest
		}
	}
	if c.ctl&ctlShutdown != 0 && len(c.wbuf) == 0 {
		return OpShutdown
	}
	if c.ctl&ctlCreditUpdate != 0 {
		return OpCreditUpdate
	}
	return OpInvalid
}

// minRxAlloc is the smallest receive buffer allocated: one Linux rx buffer
// (VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE, linux/virtio_vsock.h).
const minRxAlloc = 4096

// growRxLocked extends rbuf by n bytes (the caller checked the bound) and
// returns the new tail to fill.
func (c *Conn) growRxLocked(n int) []byte {
	l := len(c.rbuf)
	if cap(c.rbuf)-l < n {
		size := max(2*cap(c.rbuf), l+n, minRxAlloc)
		size = min(size, int(c.d.cfg.BufferSize))
		nb := make([]byte, l, max(size, l+n))
		copy(nb, c.rbuf)
		c.rbuf = nb
	}
	c.rbuf = c.rbuf[:l+n]
	return c.rbuf[l:]
}

// deadline is a settable deadline: wait returns a channel closed once it
// passes. The shape follows net.Pipe's.
type deadline struct {
	mu     sync.Mutex // guards timer and cancel
	timer  *time.Timer
	cancel chan struct{}
}

func makeDeadline() deadline { return deadline{cancel: make(chan struct{})} }

// set moves the deadline to t; the zero time means none.
func (dl *deadline) set(t time.Time) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.timer != nil && !dl.timer.Stop() {
		<-dl.cancel // the timer fired: wait until it closed cancel
	}
	dl.timer = nil
	expired := isClosed(dl.cancel)
	if t.IsZero() {
		if expired {
			dl.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if expired {
			dl.cancel = make(chan struct{})
		}
		cancel := dl.cancel
		dl.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !expired {
		close(dl.cancel)
	}
}

// wait returns a channel closed when the deadline passes.
func (dl *deadline) wait() chan struct{} {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.cancel
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
