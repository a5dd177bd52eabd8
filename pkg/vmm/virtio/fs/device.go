// SPDX-License-Identifier: Apache-2.0

package fs

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"
)

// Queue sizes the device offers (virtio 1.2 §5.11.2: queue 0 is hiprio,
// queues 1..N are request queues). Linux's virtiofs caps a request's pages
// by the queue size, so the request queues are large enough for a
// fuse.MaxWrite request even without indirect descriptors.
const (
	HiprioQueueSize  = 128
	RequestQueueSize = 1024
	// MaxRequestQueues bounds Config.RequestQueues.
	MaxRequestQueues = 16
	// TagBytes is the size of the tag field: the mount tag has at most
	// this many bytes (NUL-padded, not NUL-terminated when full).
	TagBytes = 36
)

// maxChainsPerNotify bounds the chains one QueueNotify serves, as in
// package blk: a guest that refills the queue as fast as it is served
// cannot hold a vCPU in the device forever.
const maxChainsPerNotify = 4 * RequestQueueSize

// Configuration space (virtio 1.2 §5.11.4, struct virtio_fs_config),
// little-endian:
//
//	+0  tag                 u8[36]
//	+36 num_request_queues  u32
//
// notify_buf_size (+40) belongs to VIRTIO_FS_F_NOTIFICATION, not offered.
const (
	cfgTag          = 0
	cfgNumRequestQs = 36
	configSize      = 40
)

// Config configures a virtio-fs device.
type Config struct {
	// Tag is the mount tag the guest names (mount -t virtiofs TAG dir):
	// 1 to TagBytes bytes, no NUL.
	Tag string
	// RequestQueues is the number of request queues, at most
	// MaxRequestQueues. Zero means 1. Requests are served one at a time
	// whatever the number; more queues only spare the guest contention.
	RequestQueues int
	// Share configures the FUSE server New creates for the device when
	// Backend is nil. On success the device owns the server and Close
	// closes it.
	Share fuse.Config
	// Backend, when not nil, serves the requests instead of a server
	// made from Share (Share must then be zero). The device owns it from
	// a successful New: Close closes it.
	Backend Backend
}

// Device is a virtio file system device (virtio 1.2 §5.11) that hands
// every request to a FUSE server.
type Device struct {
	m       Metrics
	config  [configSize]byte
	nq      int // queues: hiprio + request queues
	backend Backend

	mu     sync.Mutex       // guards the fields below; held while serving
	closed bool             // Close was called
	queues []*virtio.Queue  // nil before Activate and after Reset
	irq    virtio.Interrupt // nil before Activate and after Reset
	head   []byte           // copy of the start of the request being served
	reply  []byte           // scratch for building replies
}

var _ virtio.Device = (*Device)(nil)

// New returns a device in its reset state, creating its FUSE server from
// cfg.Share unless cfg.Backend is set.
func New(cfg Config) (*Device, error) {
	if cfg.Tag == "" || len(cfg.Tag) > TagBytes || strings.IndexByte(cfg.Tag, 0) >= 0 {
		return nil, fmt.Errorf("%w: tag %q must be 1 to %d bytes without NUL", ErrConfig, cfg.Tag, TagBytes)
	}
	if cfg.RequestQueues < 0 || cfg.RequestQueues > MaxRequestQueues {
		return nil, fmt.Errorf("%w: %d request queues, want 0 to %d", ErrConfig, cfg.RequestQueues, MaxRequestQueues)
	}
	if cfg.RequestQueues == 0 {
		cfg.RequestQueues = 1
	}
	b := cfg.Backend
	if b != nil && cfg.Share != (fuse.Config{}) {
		return nil, fmt.Errorf("%w: both backend and share set", ErrConfig)
	}
	if b == nil {
		s, err := fuse.New(cfg.Share)
		if err != nil {
			return nil, fmt.Errorf("fs: %w", err)
		}
		b = s
	}
	d := &Device{nq: 1 + cfg.RequestQueues, backend: b}
	copy(d.config[cfgTag:cfgTag+TagBytes], cfg.Tag)
	le32(d.config[cfgNumRequestQs:], uint32(cfg.RequestQueues))
	return d, nil
}

func le32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// Metrics returns the device's counters.
func (d *Device) Metrics() *Metrics { return &d.m }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceTypeFS }

// Features implements virtio.Device: no device-specific bits
// (VIRTIO_FS_F_NOTIFICATION is not offered), the split-queue features of
// package virtio.
func (d *Device) Features() uint64 { return virtio.QueueFeatures }

// QueueMaxSizes implements virtio.Device: the hiprio queue, then the
// request queues.
func (d *Device) QueueMaxSizes() []uint16 {
	s := make([]uint16, d.nq)
	s[0] = HiprioQueueSize
	for i := 1; i < d.nq; i++ {
		s[i] = RequestQueueSize
	}
	return s
}

// ReadConfig implements virtio.Device. The space never changes.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	if offset < uint64(len(d.config)) {
		copy(data, d.config[offset:])
	}
}

// WriteConfig implements virtio.Device: every field is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device. It needs the first request queue
// enabled; the hiprio queue and further request queues may be absent.
func (d *Device) Activate(_ *memory.Memory, queues []*virtio.Queue, irq virtio.Interrupt, _ uint64) error {
	if len(queues) != d.nq || queues[1] == nil || irq == nil {
		return ErrNoQueue
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.queues, d.irq = queues, irq
	return nil
}

// Reset implements virtio.Device. Once it returns no request is being
// served, the queues are dropped, and the FUSE session has ended: every
// node and handle the guest held is released.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queues, d.irq = nil, nil
	if !d.closed {
		d.backend.Reset()
	}
}

// Close stops the device and closes its backend, releasing every host fd.
// It waits for a request being served, is idempotent and safe from any
// goroutine; only the first call returns the backend's error.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.queues, d.irq = nil, nil
	d.head, d.reply = nil, nil
	if err := d.backend.Close(); err != nil {
		return fmt.Errorf("fs: close: %w", err)
	}
	return nil
}

// QueueNotify implements virtio.Device. It serves every available request
// of queue index synchronously on the caller's goroutine, then signals.
func (d *Device) QueueNotify(index int) {
	irq, signal, broken := d.drain(index)
	// Signal outside the lock; after a reset irq is stale and its
	// signals do nothing.
	if broken {
		irq.SignalNeedsReset()
	}
	if signal {
		irq.SignalUsedBuffer()
	}
}

func (d *Device) drain(index int) (irq virtio.Interrupt, signal, broken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.queues == nil || index < 0 || index >= len(d.queues) || d.queues[index] == nil {
		return nil, false, false
	}
	q := d.queues[index]
	r := q.Drain(maxChainsPerNotify, d.serve)
	d.m.BadChains.Add(uint64(r.BadChains))
	if r.Overrun {
		d.m.Overruns.Add(1)
	}
	if r.Broken {
		d.m.QueueBroken.Add(1)
	}
	return d.irq, q.NeedsInterrupt(), r.Broken
}

// serve copies the start of the request out of c's readable buffers (at
// most fuse.HeadSize bytes: all of it but a WRITE payload, so the guest
// cannot change what the server checks while it checks it) and lets the
// backend answer it. READ and WRITE payloads move directly between guest
// buffers and the host file. It returns the used length: the reply's, or
// 0 for none. The caller holds d.mu.
func (d *Device) serve(c *virtio.Chain) uint32 {
	if d.head == nil {
		// Allocated on first use, not in New: a device the guest never
		// drives costs no buffers.
		d.head = make([]byte, fuse.HeadSize)
		d.reply = make([]byte, fuse.MaxReplySize)
	}
	d.m.Requests.Add(1)
	if c.ReadableLen() > fuse.MaxRequestSize {
		d.m.Oversize.Add(1)
	}
	n := min(c.ReadableLen(), uint64(len(d.head)))
	k, _ := io.ReadFull(c, d.head[:n])
	tail := skip(c.Readable(), k)
	m := d.backend.ServeScattered(d.head[:k], tail, c.Writable(), d.reply)
	if m <= 0 {
		return 0
	}
	d.m.Replies.Add(1)
	return uint32(m)
}

// skip returns bufs without their first n bytes, leaving bufs unchanged.
func skip(bufs [][]byte, n int) [][]byte {
	for i, b := range bufs {
		if n < len(b) {
			out := make([][]byte, 0, len(bufs)-i)
			out = append(out, b[n:])
			return append(out, bufs[i+1:]...)
		}
		n -= len(b)
	}
	return nil
}
