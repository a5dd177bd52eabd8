// SPDX-License-Identifier: Apache-2.0

package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// Queue indices (virtio 1.2 §5.1.2): receiveq1 and transmitq1. Without
// VIRTIO_NET_F_MQ and VIRTIO_NET_F_CTRL_VQ there are no others.
const (
	queueRx   = 0 // receiveq1: device to driver
	queueTx   = 1 // transmitq1: driver to device
	numQueues = 2
)

// Feature bits of the network device (virtio 1.2 §5.1.3). The device
// offers MTU and Status always, MAC when Config.MAC is set, and the
// split-queue features of package virtio; no checksum or segmentation
// offload, no mergeable rx buffers, no control queue.
const (
	FeatureMTU    uint64 = 1 << 3  // VIRTIO_NET_F_MTU: mtu is valid
	FeatureMAC    uint64 = 1 << 5  // VIRTIO_NET_F_MAC: mac is valid
	FeatureStatus uint64 = 1 << 16 // VIRTIO_NET_F_STATUS: status is valid
)

// StatusLinkUp is VIRTIO_NET_S_LINK_UP in the configuration space's status
// field (virtio 1.2 §5.1.4).
const StatusLinkUp uint16 = 1

// Configuration space layout (virtio 1.2 §5.1.4, struct virtio_net_config),
// little-endian. Fields after mtu belong to features the device does not
// offer (SPEED_DUPLEX, RSS, HASH_REPORT) and read as zero.
//
//	+0  mac                  u8[6]  Config.MAC (VIRTIO_NET_F_MAC)
//	+6  status               le16   StatusLinkUp (VIRTIO_NET_F_STATUS)
//	+8  max_virtqueue_pairs  le16   1 (only meaningful with MQ; one pair)
//	+10 mtu                  le16   Config.MTU (VIRTIO_NET_F_MTU)
const (
	cfgMAC      = 0
	cfgStatus   = 6
	cfgMaxPairs = 8
	cfgMTU      = 10
	configSize  = 12
)

// Sizes and defaults.
const (
	// DefaultMTU is the MTU advertised when Config.MTU is zero: Ethernet's
	// ETH_DATA_LEN (linux/if_ether.h).
	DefaultMTU = 1500
	// MinMTU is the smallest MTU accepted: ETH_MIN_MTU (linux/if_ether.h),
	// the least an IPv4 host must handle (RFC 791). Linux's virtio_net
	// refuses a smaller mtu in the configuration space.
	MinMTU = 68
	// MaxMTU is the largest MTU accepted: the mtu field is le16.
	MaxMTU = 65535
	// DefaultQueueSize is the largest size of each virtqueue when
	// Config.QueueSize is zero; Firecracker's net device uses 256
	// (devices/virtio/net/mod.rs QUEUE_SIZE).
	DefaultQueueSize = 256
	// DefaultRxQueueLen is the number of host frames that may wait for
	// guest rx buffers when Config.RxQueueLen is zero.
	DefaultRxQueueLen = 256
	// MaxRxQueueLen bounds Config.RxQueueLen.
	MaxRxQueueLen = 1 << 16

	// EthernetHeaderLen is ETH_HLEN (linux/if_ether.h): destination and
	// source MAC and EtherType. Shorter frames are dropped.
	EthernetHeaderLen = 14
	// VLANHeaderLen is VLAN_HLEN (linux/if_vlan.h). A frame may be MTU +
	// EthernetHeaderLen + VLANHeaderLen bytes long, as Linux's virtio_net
	// sizes its buffers (GOOD_PACKET_LEN).
	VLANHeaderLen = 4
)

// Config configures a Device.
type Config struct {
	// MAC is the guest's Ethernet address, shown in the configuration
	// space with VIRTIO_NET_F_MAC. It must be 6 bytes, unicast and not all
	// zero. Nil means the device does not offer VIRTIO_NET_F_MAC and the
	// guest driver makes up a random address (§5.1.5).
	MAC net.HardwareAddr
	// MTU is the largest IP packet the link carries, advertised with
	// VIRTIO_NET_F_MTU; Ethernet frames may be MTU+18 bytes (header and a
	// VLAN tag) in both directions. Zero means DefaultMTU; otherwise
	// MinMTU to MaxMTU. A driver that does not negotiate VIRTIO_NET_F_MTU
	// uses 1500 and may post rx buffers too small for larger frames,
	// which are then dropped (Metrics.RxDropsSmallBuffer).
	MTU int
	// QueueSize is the largest size the driver may choose for each
	// virtqueue (a power of two). Zero means DefaultQueueSize.
	QueueSize uint16
	// RxQueueLen bounds the host frames waiting for guest rx buffers;
	// Deliver drops frames beyond it and DeliverContext waits. Zero means
	// DefaultRxQueueLen; at most MaxRxQueueLen.
	RxQueueLen int
	// Backend receives the frames the guest sends. Required.
	Backend Backend
	// Metrics receives the device's counters; nil means a private set,
	// see Device.Metrics.
	Metrics *Metrics
}

// Device is a virtio network device (virtio 1.2 §5.1) with one rx/tx queue
// pair. Guest frames go to Config.Backend; host frames come in through
// Deliver and DeliverContext. Its methods are safe for concurrent use. See
// the package documentation for the goroutine it owns.
type Device struct {
	m        *Metrics
	backend  Backend
	mac      [6]byte
	hasMAC   bool
	mtu      int
	maxFrame int // MTU + EthernetHeaderLen + VLANHeaderLen
	qsize    uint16
	rxLen    int
	kick     chan struct{} // wakes the worker; buffered for one
	wg       sync.WaitGroup
	once     sync.Once // Close
	linkUp   atomic.Bool

	mu       sync.Mutex // guards the fields below; the worker holds it while it touches guest memory
	closed   bool
	active   bool
	broken   bool          // a queue broke: no queue processing until Reset
	stop     chan struct{} // closed to stop the worker; nil when none runs
	rxq, txq *virtio.Queue
	irq      virtio.Interrupt

	rxMu     sync.Mutex    // guards the fields below; taken after mu, never before
	rxOpen   bool          // host frames are accepted: active and not broken
	rxClosed bool          // Close was called
	rxRing   [][]byte      // host frames waiting for guest buffers, a ring of rxLen slots
	rxHead   int           // index in rxRing of the oldest frame
	rxCount  int           // frames in rxRing
	rxSpace  chan struct{} // closed and replaced when frames leave rxRing or rxOpen changes
}

var _ virtio.Device = (*Device)(nil)

// New returns a device in its reset state, with the link up. It starts no
// goroutines. It reports every problem with cfg together, wrapping
// ErrConfig.
func New(cfg Config) (*Device, error) {
	var errs []error
	d := &Device{
		m:       cfg.Metrics,
		backend: cfg.Backend,
		mtu:     cfg.MTU,
		qsize:   cfg.QueueSize,
		rxLen:   cfg.RxQueueLen,
		kick:    make(chan struct{}, 1),
		rxSpace: make(chan struct{}),
	}
	if cfg.Backend == nil {
		errs = append(errs, errors.New("no backend"))
	}
	if cfg.MAC != nil {
		switch {
		case len(cfg.MAC) != 6:
			errs = append(errs, fmt.Errorf("mac %v is not 6 bytes", cfg.MAC))
		case cfg.MAC[0]&1 != 0:
			errs = append(errs, fmt.Errorf("mac %v is multicast", cfg.MAC))
		case [6]byte(cfg.MAC) == [6]byte{}:
			errs = append(errs, fmt.Errorf("mac %v is all zero", cfg.MAC))
		default:
			d.mac, d.hasMAC = [6]byte(cfg.MAC), true
		}
	}
	if d.mtu == 0 {
		d.mtu = DefaultMTU
	}
	if d.mtu < MinMTU || d.mtu > MaxMTU {
		errs = append(errs, fmt.Errorf("mtu %d outside %d to %d", d.mtu, MinMTU, MaxMTU))
	}
	if d.qsize == 0 {
		d.qsize = DefaultQueueSize
	}
	if s := d.qsize; s&(s-1) != 0 || s > virtio.MaxQueueSize {
		errs = append(errs, fmt.Errorf("queue size %d is not a power of two up to %d", s, virtio.MaxQueueSize))
	}
	if d.rxLen == 0 {
		d.rxLen = DefaultRxQueueLen
	}
	if d.rxLen < 0 || d.rxLen > MaxRxQueueLen {
		errs = append(errs, fmt.Errorf("rx queue length %d outside 1 to %d", d.rxLen, MaxRxQueueLen))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if d.m == nil {
		d.m = new(Metrics)
	}
	d.maxFrame = d.mtu + EthernetHeaderLen + VLANHeaderLen
	d.rxRing = make([][]byte, d.rxLen)
	d.linkUp.Store(true)
	return d, nil
}

// Metrics returns the device's counters.
func (d *Device) Metrics() *Metrics { return d.m }

// MTU returns the MTU advertised to the guest.
func (d *Device) MTU() int { return d.mtu }

// MaxFrameLen returns the longest Ethernet frame accepted in either
// direction: MTU + EthernetHeaderLen + VLANHeaderLen.
func (d *Device) MaxFrameLen() int { return d.maxFrame }

// MAC returns the guest's address from Config.MAC, or nil if none was set.
func (d *Device) MAC() net.HardwareAddr {
	if !d.hasMAC {
		return nil
	}
	return append(net.HardwareAddr(nil), d.mac[:]...)
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceTypeNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := FeatureMTU | FeatureStatus | virtio.QueueFeatures
	if d.hasMAC {
		f |= FeatureMAC
	}
	return f
}

// QueueMaxSizes implements virtio.Device: receiveq1 and transmitq1.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{d.qsize, d.qsize} }

// ReadConfig implements virtio.Device; see the layout at configSize.
// Offsets past the space read as zero.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	var cfg [configSize]byte
	copy(cfg[cfgMAC:], d.mac[:]) // zero without a MAC
	if d.linkUp.Load() {
		binary.LittleEndian.PutUint16(cfg[cfgStatus:], StatusLinkUp)
	}
	binary.LittleEndian.PutUint16(cfg[cfgMaxPairs:], 1)
	binary.LittleEndian.PutUint16(cfg[cfgMTU:], uint16(d.mtu)) // MTU <= MaxMTU fits
	if offset < configSize {
		copy(data, cfg[offset:])
	}
}

// WriteConfig implements virtio.Device. The configuration space is
// read-only for a VERSION_1 driver (§5.1.4.2: the driver must not write
// mac, which only the legacy interface allowed); writes are ignored.
func (d *Device) WriteConfig(uint64, []byte) {}

// SetLink sets the link status the guest reads (VIRTIO_NET_S_LINK_UP) and,
// if it changed while the device is active, sends a configuration change
// notification. Frames keep flowing either way: the guest driver stops
// transmitting on a link-down of its own accord.
func (d *Device) SetLink(up bool) {
	if d.linkUp.Swap(up) == up {
		return
	}
	d.mu.Lock()
	irq := d.irq
	d.mu.Unlock()
	if irq != nil {
		irq.SignalConfigChange()
	}
}

// LinkUp reports the link status set by SetLink; a new device's link is up.
func (d *Device) LinkUp() bool { return d.linkUp.Load() }

// Activate implements virtio.Device. It needs the rx and tx queues, starts
// the device's worker goroutine and opens the rx path to host frames.
func (d *Device) Activate(_ *memory.Memory, queues []*virtio.Queue, irq virtio.Interrupt, _ uint64) error {
	if len(queues) != numQueues || queues[queueRx] == nil || queues[queueTx] == nil || irq == nil {
		return ErrNoQueue
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.active {
		return errors.New("netdev: activate: already active")
	}
	d.rxq, d.txq, d.irq = queues[queueRx], queues[queueTx], irq
	d.active, d.broken = true, false
	d.stop = make(chan struct{})
	d.wg.Add(1)
	go d.run(d.stop)
	d.rxMu.Lock()
	d.rxOpen = true
	d.signalSpaceLocked()
	d.rxMu.Unlock()
	d.wake()
	return nil
}

// Reset implements virtio.Device: it stops and joins the worker, drops the
// host frames still queued (counted in Metrics.RxDropsNotActive) and the
// queues. Until the next Activate, Deliver returns ErrNotActive.
func (d *Device) Reset() {
	d.stopWorker()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.teardownLocked()
}

// QueueNotify implements virtio.Device. It never blocks: it wakes the
// worker, which drains the tx queue and resumes rx delivery.
func (d *Device) QueueNotify(int) { d.wake() }

// Close stops the worker, waiting for it to exit, and drops queued host
// frames. Later Deliver and Activate calls fail with ErrClosed; blocked
// DeliverContext calls return it. Close is idempotent and safe from any
// goroutine except the Backend's WriteFrame; it always returns nil.
func (d *Device) Close() error {
	d.once.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.rxMu.Lock()
		d.rxClosed = true
		d.rxMu.Unlock()
		d.stopWorker()
		d.mu.Lock()
		defer d.mu.Unlock()
		d.teardownLocked()
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

// teardownLocked forgets the queues and closes the rx path. The worker has
// stopped.
func (d *Device) teardownLocked() {
	d.rxq, d.txq, d.irq = nil, nil, nil
	d.active, d.broken = false, false
	d.closeRx()
}

// run is the worker: each pass drains the tx queue (at most one queue's
// worth), fills guest rx buffers with queued host frames, hands the guest's
// frames to the backend outside the lock and signals the guest, until stop
// is closed.
func (d *Device) run(stop <-chan struct{}) {
	defer d.wg.Done()
	var frames [][]byte
	for {
		d.mu.Lock()
		p := d.passLocked(frames[:0])
		irq := d.irq
		d.mu.Unlock()
		if p.signal {
			irq.SignalUsedBuffer()
		}
		if p.needsReset {
			d.closeRx()
			d.m.NeedsReset.Add(1)
			irq.SignalNeedsReset()
		}
		for i, f := range p.frames {
			d.send(f)
			p.frames[i] = nil // the backend owns it now
		}
		frames = p.frames
		if p.again {
			d.wake()
		}
		select {
		case <-stop:
			return
		case <-d.kick:
		}
	}
}

// pass is what one worker pass leaves to do after it drops the lock.
type pass struct {
	frames     [][]byte // guest frames for the backend, in order
	signal     bool     // send a used buffer notification
	needsReset bool     // a queue broke
	again      bool     // more tx chains or rx work may be pending
}

// passLocked runs one pass over the queues, appending guest frames to
// frames.
func (d *Device) passLocked(frames [][]byte) pass {
	p := pass{frames: frames}
	if d.broken || !d.active {
		return p
	}
	p.frames, p.again = d.processTxLocked(p.frames)
	if !d.broken && d.processRxLocked() {
		p.again = true
	}
	if d.broken {
		p.needsReset, p.again = true, false
		return p
	}
	// Both queues share one interrupt; ask both so each records what it
	// reported.
	tx, rx := d.txq.NeedsInterrupt(), d.rxq.NeedsInterrupt()
	p.signal = tx || rx
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
	d.m.BadChains.Add(1)
	if q.Push(qe.Head, 0) != nil {
		d.broken = true
		return true
	}
	return false
}
