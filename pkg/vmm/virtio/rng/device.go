// SPDX-License-Identifier: Apache-2.0

package rng

import (
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// maxChainsPerNotify bounds the chains one QueueNotify serves. A driver
// cannot have more than the queue size outstanding, and a Linux guest frees
// descriptors only after the interrupt sent when QueueNotify returns, so a
// well-behaved guest stays far below it. A hostile one could otherwise keep
// a vCPU, and the transport lock it holds, inside QueueNotify forever: by
// posting from another vCPU as fast as the device pushes, or by pointing
// buffers the device writes at the available ring. Chains left over wait
// for the next notification (Metrics.Overruns counts these stops).
const maxChainsPerNotify = 4 * QueueSize

// QueueSize is the maximum size of the request queue, as Firecracker's
// entropy device offers.
const QueueSize = 256

// MaxRequestBytes bounds the entropy written for one request. The device
// may use fewer bytes than a buffer holds and reports how many in the used
// ring (§2.7.8, §5.4.6.1); without a bound, a chain of 32768 indirect
// descriptors that all alias guest RAM would keep one vCPU busy for long.
const MaxRequestBytes = 64 << 10

// errNoQueue is returned by Activate when the driver did not enable the
// request queue.
var errNoQueue = errors.New("rng: request queue not enabled")

// Metrics counts one device's traffic and guest faults. All fields are safe
// for concurrent use.
type Metrics struct {
	// Requests counts chains served and returned to the driver.
	Requests atomic.Uint64
	// Bytes counts entropy bytes written into guest buffers.
	Bytes atomic.Uint64
	// BadChains counts chains the queue rejected (a *virtio.QueueError),
	// returned to the driver unused.
	BadChains atomic.Uint64
	// QueueBroken counts times the queue broke and the device asked for
	// DEVICE_NEEDS_RESET.
	QueueBroken atomic.Uint64
	// Overruns counts notifications that stopped after serving
	// 4*QueueSize chains, leaving any further ones for the next
	// notification (a bound against a guest that keeps the device busy).
	Overruns atomic.Uint64
}

// Device is a virtio entropy device (virtio 1.2 §5.4).
type Device struct {
	m Metrics

	mu    sync.Mutex       // guards queue and irq
	queue *virtio.Queue    // request queue; nil before Activate and after Reset
	irq   virtio.Interrupt // nil before Activate and after Reset
}

var _ virtio.Device = (*Device)(nil)

// New returns an entropy device in its reset state.
func New() *Device { return &Device{} }

// Metrics returns the device's counters.
func (d *Device) Metrics() *Metrics { return &d.m }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceTypeRNG }

// Features implements virtio.Device. §5.4.3 defines no device feature bits.
func (d *Device) Features() uint64 { return virtio.QueueFeatures }

// QueueMaxSizes implements virtio.Device: one request queue (§5.4.2).
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device. The device has no configuration
// space (§5.4.4), so every read is zero.
func (d *Device) ReadConfig(offset uint64, data []byte) { clear(data) }

// WriteConfig implements virtio.Device. With no configuration space, writes
// are ignored.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device. It needs the request queue enabled.
func (d *Device) Activate(_ *memory.Memory, queues []*virtio.Queue, irq virtio.Interrupt, _ uint64) error {
	if len(queues) != 1 || queues[0] == nil || irq == nil {
		return errNoQueue
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queue, d.irq = queues[0], irq
	return nil
}

// Reset implements virtio.Device. Once it returns, no request is being
// served and the queue is dropped.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queue, d.irq = nil, nil
}

// QueueNotify implements virtio.Device. It serves every available request:
// each writable buffer of the chain is filled from crypto/rand, up to
// MaxRequestBytes in all, readable buffers are ignored, and the chain is
// pushed with the number of bytes written. The chains are guest-controlled;
// virtio.Queue.Pop has checked them against guest RAM.
func (d *Device) QueueNotify(index int) {
	irq, signal, broken := d.process(index)
	// Signal outside the lock; a reset meanwhile makes irq a stale
	// Interrupt, whose signals do nothing.
	if broken {
		irq.SignalNeedsReset()
	}
	if signal {
		irq.SignalUsedBuffer()
	}
}

// process drains the queue and reports whether to signal a used buffer or
// a broken queue on irq.
func (d *Device) process(index int) (irq virtio.Interrupt, signal, broken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queue
	if q == nil || index != 0 {
		return nil, false, false
	}
	r := q.Drain(maxChainsPerNotify, func(c *virtio.Chain) uint32 {
		n := fill(c.Writable())
		d.m.Requests.Add(1)
		d.m.Bytes.Add(uint64(n))
		return n
	})
	d.m.BadChains.Add(uint64(r.BadChains))
	if r.Overrun {
		d.m.Overruns.Add(1)
	}
	broken = r.Broken
	if broken {
		d.m.QueueBroken.Add(1)
	}
	return d.irq, q.NeedsInterrupt(), broken
}

// fill writes entropy into bufs, in order, up to MaxRequestBytes, and
// returns the number of bytes written.
func fill(bufs [][]byte) uint32 {
	var n uint32
	for _, b := range bufs {
		if room := MaxRequestBytes - n; uint64(len(b)) > uint64(room) {
			b = b[:room]
		}
		// crypto/rand.Read never returns an error: it aborts the process
		// if the kernel's generator fails (Go 1.24 and later).
		_, _ = rand.Read(b)
		n += uint32(len(b))
		if n == MaxRequestBytes {
			break
		}
	}
	return n
}
