// SPDX-License-Identifier: Apache-2.0

package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// Queue indices (virtio 1.2 §5.10.2).
const (
	queueRx    = 0 // receiveq: device to driver
	queueTx    = 1 // transmitq: driver to device
	queueEvent = 2 // eventq: device events (never used: no snapshots yet)
	numQueues  = 3
)

// FeatureStream is VIRTIO_VSOCK_F_STREAM (virtio 1.2 §5.10.3): stream
// sockets are supported. A driver that acknowledges no feature still gets
// stream sockets (§5.10.3.1).
const FeatureStream uint64 = 1 << 0

// configSize is the size of the configuration space: le64 guest_cid
// (virtio 1.2 §5.10.4).
const configSize = 8

// Defaults and bounds.
const (
	// DefaultBufferSize is the receive buffer per connection advertised as
	// buf_alloc: Firecracker's CONN_TX_BUF_SIZE (64 KiB,
	// src/vmm/src/devices/virtio/vsock/csm/mod.rs).
	DefaultBufferSize = 64 << 10
	// MaxBufferSize bounds Config.BufferSize.
	MaxBufferSize = 16 << 20
	// DefaultMaxConnections bounds connections per device.
	DefaultMaxConnections = 1024
	// DefaultBacklog bounds connections waiting for Accept per listener.
	DefaultBacklog = 128
	// DefaultQueueSize is the largest size of each virtqueue; Firecracker
	// uses 256 (vsock/mod.rs QUEUE_SIZE).
	DefaultQueueSize = 256
	// DefaultCloseTimeout is how long a closed connection waits for the
	// guest's RST after its SHUTDOWN: Firecracker's
	// CONN_SHUTDOWN_TIMEOUT_MS (2000 ms).
	DefaultCloseTimeout = 2 * time.Second

	// maxPayload is the largest RW payload accepted or sent:
	// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE (64 KiB, linux/virtio_vsock.h).
	maxPayload = 64 << 10
	// maxPendingRST bounds RSTs waiting for rx buffers; beyond it RSTs for
	// a flood of bad packets are dropped (Firecracker's muxer kill queue
	// holds 128; this also covers RSTs for every connection at once).
	maxPendingRST = DefaultMaxConnections
	// ephemeralBase is the first host port Dial assigns; Firecracker starts
	// there too (its example reply is "OK 1073741824").
	ephemeralBase = 1 << 30
)

// Config configures a Device.
type Config struct {
	// GuestCID is the guest's context ID, shown in the configuration space
	// (§5.10.4). Required: 3 to 0xfffffffe (0-2 are reserved and
	// 0xffffffff is VMADDR_CID_ANY).
	GuestCID uint32
	// BufferSize is the receive buffer per connection, in bytes, advertised
	// to the guest as buf_alloc: at most this many bytes the host has not
	// read are held per connection. Zero means DefaultBufferSize; at most
	// MaxBufferSize.
	BufferSize uint32
	// MaxConnections bounds the connections the device holds, in both
	// directions, counting those in a listen backlog or closing. Zero means
	// DefaultMaxConnections.
	MaxConnections int
	// Backlog bounds connections waiting for Accept per listener. Zero
	// means DefaultBacklog.
	Backlog int
	// QueueSize is the largest size the driver may choose for each
	// virtqueue (a power of two). Zero means DefaultQueueSize.
	QueueSize uint16
	// CloseTimeout is how long a connection closed by the host waits for
	// the guest to acknowledge with RST before the device sends RST and
	// frees it. Zero means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// Metrics receives the device's counters; nil means a private set, see
	// Device.Metrics.
	Metrics *Metrics
}

// connKey identifies a connection: host port and guest port.
type connKey struct{ local, peer uint32 }

// Device is a virtio-vsock device (virtio 1.2 §5.10) with its host side in
// userspace: host programs reach guest sockets through Dial and Listen.
// Its methods are safe for concurrent use. See the package documentation
// for the goroutine it owns.
type Device struct {
	cfg  Config
	m    *Metrics
	kick chan struct{} // wakes the worker; buffered for one
	wg   sync.WaitGroup
	once sync.Once // Close

	mu        sync.Mutex // guards the fields below and every Conn's and Listener's state
	closed    bool
	active    bool
	broken    bool          // a queue broke: no queue processing until Reset
	stop      chan struct{} // closed to stop the worker; nil when none runs
	rxq, txq  *virtio.Queue
	irq       virtio.Interrupt
	conns     map[connKey]*Conn
	listeners map[uint32]*Listener
	fallback  *Listener // accepts guest connects to ports without a listener, deferred
	ready     []*Conn   // connections that may have a packet for the guest, FIFO
	rsts      []connKey // RSTs to send, not tied to a held connection
	closing   []*Conn   // connections in stateClosing, by deadline
	nextPort  uint32    // next ephemeral host port to try
}

var _ virtio.Device = (*Device)(nil)

// New returns a device in its reset state. It starts no goroutines.
func New(cfg Config) (*Device, error) {
	var errs []error
	if cfg.GuestCID < 3 || cfg.GuestCID == math.MaxUint32 {
		errs = append(errs, fmt.Errorf("guest CID %d is reserved", cfg.GuestCID))
	}
	if cfg.BufferSize == 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.BufferSize > MaxBufferSize {
		errs = append(errs, fmt.Errorf("buffer size %d above %d", cfg.BufferSize, MaxBufferSize))
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("max connections %d", cfg.MaxConnections))
	}
	if cfg.Backlog == 0 {
		cfg.Backlog = DefaultBacklog
	}
	if cfg.Backlog < 0 {
		errs = append(errs, fmt.Errorf("backlog %d", cfg.Backlog))
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if s := cfg.QueueSize; s&(s-1) != 0 || s > virtio.MaxQueueSize {
		errs = append(errs, fmt.Errorf("queue size %d is not a power of two up to %d", s, virtio.MaxQueueSize))
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.CloseTimeout < 0 {
		errs = append(errs, fmt.Errorf("close timeout %v", cfg.CloseTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	m := cfg.Metrics
	if m == nil {
		m = new(Metrics)
	}
	return &Device{
		cfg:       cfg,
		m:         m,
		kick:      make(chan struct{}, 1),
		conns:     make(map[connKey]*Conn),
		listeners: make(map[uint32]*Listener),
		nextPort:  ephemeralBase,
	}, nil
}

// Metrics returns the device's counters.
func (d *Device) Metrics() *Metrics { return d.m }

// GuestCID returns the guest's context ID.
func (d *Device) GuestCID() uint32 { return d.cfg.GuestCID }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceTypeVsock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return FeatureStream | virtio.QueueFeatures }

// QueueMaxSizes implements virtio.Device: rx, tx and event queues.
func (d *Device) QueueMaxSizes() []uint16 {
	s := d.cfg.QueueSize
	return []uint16{s, s, s}
}

// ReadConfig implements virtio.Device: le64 guest_cid at offset 0
// (§5.10.4); the rest reads as zero.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	var cfg [configSize]byte
	binary.LittleEndian.PutUint64(cfg[:], uint64(d.cfg.GuestCID))
	if offset < configSize {
		copy(data, cfg[offset:])
	}
}

// WriteConfig implements virtio.Device. The configuration space is
// read-only (§5.10.4); writes are ignored.
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device. It needs the rx and tx queues and
// starts the device's worker goroutine.
func (d *Device) Activate(_ *memory.Memory, queues []*virtio.Queue, irq virtio.Interrupt, _ uint64) error {
	if len(queues) != numQueues || queues[queueRx] == nil || queues[queueTx] == nil || irq == nil {
		return errors.New("vsock: activate: rx and tx queues are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.active {
		return errors.New("vsock: activate: already active")
	}
	d.rxq, d.txq, d.irq = queues[queueRx], queues[queueTx], irq
	d.active, d.broken = true, false
	d.stop = make(chan struct{})
	d.wg.Add(1)
	go d.run(d.stop)
	d.wake()
	return nil
}

// Reset implements virtio.Device: it stops and joins the worker, resets
// every connection (their calls return ErrDeviceReset) and drops the
// queues. Listeners survive a reset.
func (d *Device) Reset() {
	d.stopWorker()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.teardownLocked(ErrDeviceReset)
}

// QueueNotify implements virtio.Device. It never blocks: it wakes the
// worker, which drains the queues. It is safe from any goroutine.
func (d *Device) QueueNotify(int) { d.wake() }

// Close resets every connection (their calls return ErrClosed), closes
// every listener and stops the worker, waiting for it to exit. Later Dial,
// Listen and Activate calls fail with ErrClosed. Close is idempotent and
// safe from any goroutine; it always returns nil.
func (d *Device) Close() error {
	d.once.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.stopWorker()
		d.mu.Lock()
		defer d.mu.Unlock()
		d.teardownLocked(ErrClosed)
		for _, l := range d.listeners {
			l.closeLocked()
		}
		if d.fallback != nil {
			d.fallback.closeLocked()
		}
	})
	return nil
}

// wake makes the worker run a pass soon; it never blocks.
func (d *Device) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// stopWorker stops the worker, if one runs, and waits for it to exit.
func (d *Device) stopWorker() {
	d.mu.Lock()
	if d.stop != nil {
		close(d.stop)
		d.stop = nil
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// teardownLocked drops every connection with err and forgets the queues.
// The worker has stopped, so no RST can reach the guest: a reset driver has
// forgotten its sockets anyway (§5.10.6.6 on transport reset).
func (d *Device) teardownLocked(err error) {
	for _, c := range d.conns {
		c.failLocked(err)
	}
	d.ready, d.rsts, d.closing = nil, nil, nil
	d.rxq, d.txq, d.irq = nil, nil, nil
	d.active, d.broken = false, false
}

// run is the worker: it drains the tx queue, fills the rx queue and
// expires closing connections until stop is closed.
func (d *Device) run(stop <-chan struct{}) {
	defer d.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		d.mu.Lock()
		p := d.passLocked(time.Now())
		irq := d.irq
		d.mu.Unlock()
		if p.needsReset {
			d.m.NeedsReset.Add(1)
			irq.SignalNeedsReset()
		}
		if p.signal {
			irq.SignalUsedBuffer()
		}
		if p.again {
			d.wake()
		}
		if !p.next.IsZero() {
			timer.Reset(time.Until(p.next))
		}
		select {
		case <-stop:
			timer.Stop()
			return
		case <-d.kick:
		case <-timer.C:
		}
	}
}

// pass is what one worker pass asks for after it drops the lock.
type pass struct {
	signal     bool      // send a used buffer notification
	needsReset bool      // a queue broke
	again      bool      // more tx chains may be pending
	next       time.Time // earliest closing deadline, zero if none
}

// passLocked runs one pass over the queues.
func (d *Device) passLocked(now time.Time) pass {
	var p pass
	if d.broken || !d.active {
		return p
	}
	p.again = d.processTxLocked()
	d.expireLocked(now)
	d.processRxLocked()
	if d.broken {
		p.needsReset, p.again = true, false
	} else {
		// Both queues share one interrupt line; either may want it.
		tx, rx := d.txq.NeedsInterrupt(), d.rxq.NeedsInterrupt()
		p.signal = tx || rx
	}
	if len(d.closing) > 0 {
		p.next = d.closing[0].closeDeadline
	}
	return p
}

// queueErrLocked handles an error from Pop: a bad chain is returned to the
// driver unused and counted; a broken queue stops the device. It reports
// whether the queue is unusable.
func (d *Device) queueErrLocked(q *virtio.Queue, err error) bool {
	var qe *virtio.QueueError
	if errors.Is(err, virtio.ErrQueueBroken) || !errors.As(err, &qe) {
		d.broken = true
		return true
	}
	d.m.QueueErrors.Add(1)
	if q.Push(qe.Head, 0) != nil {
		d.broken = true
		return true
	}
	return false
}

// expireLocked resets connections whose close timeout passed.
func (d *Device) expireLocked(now time.Time) {
	for len(d.closing) > 0 {
		c := d.closing[0]
		if c.state == stateClosing && now.Before(c.closeDeadline) {
			return
		}
		d.closing = d.closing[1:]
		if c.state == stateClosing {
			d.removeLocked(c)
			d.queueRSTLocked(c.key)
		}
	}
	d.closing = nil // let the backing array go
}

// queueRSTLocked queues an RST for key, dropping it if too many wait.
func (d *Device) queueRSTLocked(key connKey) {
	if len(d.rsts) >= maxPendingRST {
		d.m.RSTDropped.Add(1)
		return
	}
	d.rsts = append(d.rsts, key)
}

// scheduleLocked puts c on the ready list if it has a packet for the guest.
func (d *Device) scheduleLocked(c *Conn) {
	if c.queued || c.nextOpLocked(1) == OpInvalid {
		return
	}
	c.queued = true
	d.ready = append(d.ready, c)
}

// removeLocked forgets c: it leaves the connection map and any listen
// backlog. Its buffered data stays readable.
func (d *Device) removeLocked(c *Conn) {
	if c.state == stateDead {
		return
	}
	if c.state == stateConnecting {
		close(c.connected)
	}
	c.state = stateDead
	delete(d.conns, c.key)
	d.m.Active.Add(-1)
	if l := c.backlog; l != nil {
		c.backlog = nil
		for i, p := range l.pending {
			if p == c {
				l.pending = append(l.pending[:i], l.pending[i+1:]...)
				break
			}
		}
	}
	c.signal()
}

// addConnLocked creates a connection in state st and adds it to the map.
func (d *Device) addConnLocked(key connKey, st connState) *Conn {
	c := newConn(d, key, st)
	d.conns[key] = c
	d.m.Active.Add(1)
	return c
}

// fillHeader writes the header of a host-to-guest packet for key.
func (d *Device) fillHeader(h Header, key connKey, op Op) {
	clear(h)
	h.SetSrcCID(HostCID)
	h.SetDstCID(uint64(d.cfg.GuestCID))
	h.SetSrcPort(key.local)
	h.SetDstPort(key.peer)
	h.SetType(TypeStream)
	h.SetOp(op)
	h.SetBufAlloc(d.cfg.BufferSize)
}
