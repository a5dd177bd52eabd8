// SPDX-License-Identifier: Apache-2.0

package blk

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sync"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// Feature bits of the block device (virtio 1.2 §5.2.3). Those offered are
// SegMax, BlkSize and Flush always, and RO for a read-only disk.
const (
	FeatureSizeMax uint64 = 1 << 1 // VIRTIO_BLK_F_SIZE_MAX: size_max is valid
	FeatureSegMax  uint64 = 1 << 2 // VIRTIO_BLK_F_SEG_MAX: seg_max is valid
	FeatureRO      uint64 = 1 << 5 // VIRTIO_BLK_F_RO: the device is read-only
	FeatureBlkSize uint64 = 1 << 6 // VIRTIO_BLK_F_BLK_SIZE: blk_size is valid
	FeatureFlush   uint64 = 1 << 9 // VIRTIO_BLK_F_FLUSH: FLUSH is supported
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
// block device offers.
const QueueSize = 256

// SegMax is the seg_max the device advertises: the data segments of one
// request when every descriptor of the queue is used, less one for the
// header and one for the status (Linux virtio_blk adds those two to
// seg_max when sizing a request).
const SegMax = QueueSize - 2

// BlockSize is the blk_size the device advertises (§5.2.4): the image is
// addressed in 512-byte sectors and has no larger natural block.
const BlockSize = SectorSize

// Configuration space layout (virtio 1.2 §5.2.4, struct virtio_blk_config),
// little-endian. Fields from topology onwards belong to features the device
// does not offer and read as zero.
//
//	+0  capacity  u64   size in 512-byte sectors
//	+8  size_max  u32   (SIZE_MAX, not offered: 0)
//	+12 seg_max   u32   SegMax
//	+16 geometry  u16 cylinders, u8 heads, u8 sectors (not offered: 0)
//	+20 blk_size  u32   BlockSize
const (
	cfgCapacity = 0
	cfgSegMax   = 12
	cfgBlkSize  = 20
	configSize  = 24
)

// Config configures a block device.
type Config struct {
	// Path is the raw disk image to open. Exactly one of Path, File and
	// Backend must be set.
	Path string
	// File is an open raw disk image (a regular file or a block device).
	// On success the device owns it and Close closes it; when New fails
	// the caller still owns it.
	File *os.File
	// Backend is an open disk in another form, such as a qcow2 image
	// (package qcow2's Image). On success the device owns it and Close
	// closes it; when New fails the caller still owns it.
	Backend Backend
	// ReadOnly makes the disk read-only: Path is opened O_RDONLY, the
	// device offers VIRTIO_BLK_F_RO and refuses every write. False means
	// read-write. A Backend should then be opened read-only too; the
	// device never writes or syncs it either way.
	ReadOnly bool
	// ID is the serial returned by GET_ID, at most IDBytes bytes. Empty
	// means a device ID of all NUL bytes.
	ID string
}

// Device is a virtio block device (virtio 1.2 §5.2) over a Backend, by
// default a raw image. Its capacity is the disk size at New, rounded down
// to whole sectors; bytes past the last whole sector are never read or
// written.
type Device struct {
	m        Metrics
	readOnly bool
	capacity uint64 // in sectors; capacity*SectorSize <= the disk size
	id       [IDBytes]byte
	config   [configSize]byte

	mu     sync.Mutex       // guards the fields below; held while serving requests
	disk   Backend          // the disk; closed once closed is set
	closed bool             // Close was called
	queue  *virtio.Queue    // request queue; nil before Activate and after Reset
	irq    virtio.Interrupt // nil before Activate and after Reset
}

var _ virtio.Device = (*Device)(nil)

// New opens the disk of cfg and returns a block device in its reset state.
func New(cfg Config) (*Device, error) {
	if len(cfg.ID) > IDBytes {
		return nil, fmt.Errorf("%w: id %q longer than %d bytes", ErrConfig, cfg.ID, IDBytes)
	}
	disk, err := openDisk(cfg)
	if err != nil {
		return nil, err
	}
	// span relies on every offset inside the capacity fitting an int64.
	if disk.Size() > math.MaxInt64 {
		if cfg.Path != "" {
			disk.Close()
		}
		return nil, fmt.Errorf("%w: disk of %d bytes exceeds the largest file offset", ErrConfig, disk.Size())
	}
	d := &Device{
		readOnly: cfg.ReadOnly,
		capacity: disk.Size() / SectorSize,
		disk:     disk,
	}
	copy(d.id[:], cfg.ID)
	binary.LittleEndian.PutUint64(d.config[cfgCapacity:], d.capacity)
	binary.LittleEndian.PutUint32(d.config[cfgSegMax:], SegMax)
	binary.LittleEndian.PutUint32(d.config[cfgBlkSize:], BlockSize)
	return d, nil
}

// openDisk returns the disk of cfg, which must name exactly one.
func openDisk(cfg Config) (Backend, error) {
	set := 0
	for _, ok := range []bool{cfg.Path != "", cfg.File != nil, cfg.Backend != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return nil, fmt.Errorf("%w: %d of path, file and backend set, want exactly one", ErrConfig, set)
	}
	switch {
	case cfg.Backend != nil:
		return cfg.Backend, nil
	case cfg.File != nil:
		return newRawFile(cfg.File)
	}
	flag := os.O_RDWR
	if cfg.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(cfg.Path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("blk: open %s: %w", cfg.Path, err)
	}
	r, err := newRawFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// Metrics returns the device's counters.
func (d *Device) Metrics() *Metrics { return &d.m }

// Capacity returns the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// ReadOnly reports whether the disk is read-only.
func (d *Device) ReadOnly() bool { return d.readOnly }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceTypeBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := FeatureSegMax | FeatureBlkSize | FeatureFlush | virtio.QueueFeatures
	if d.readOnly {
		f |= FeatureRO
	}
	return f
}

// QueueMaxSizes implements virtio.Device: one request queue (§5.2.2; the
// device does not offer VIRTIO_BLK_F_MQ).
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device. The configuration space never
// changes, so it needs no lock.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	if offset < uint64(len(d.config)) {
		copy(data, d.config[offset:])
	}
}

// WriteConfig implements virtio.Device. Every field is read-only (writeback
// needs VIRTIO_BLK_F_CONFIG_WCE, not offered), so writes are ignored.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device. It needs the request queue enabled
// and fails with ErrClosed after Close.
func (d *Device) Activate(_ *memory.Memory, queues []*virtio.Queue, irq virtio.Interrupt, _ uint64) error {
	if len(queues) != 1 || queues[0] == nil || irq == nil {
		return ErrNoQueue
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
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

// Close stops the device and closes the disk. It waits for a request being
// served to finish, is idempotent and safe from any goroutine; only the
// first call returns the error from closing the disk.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.queue, d.irq = nil, nil
	if err := d.disk.Close(); err != nil {
		return fmt.Errorf("blk: close: %w", err)
	}
	return nil
}

// QueueNotify implements virtio.Device. It serves every available request
// synchronously on the caller's goroutine, then signals the driver.
func (d *Device) QueueNotify(index int) {
	irq, signal, broken := d.drain(index)
	// Signal outside the lock; a reset meanwhile makes irq a stale
	// Interrupt, whose signals do nothing.
	if broken {
		irq.SignalNeedsReset()
	}
	if signal {
		irq.SignalUsedBuffer()
	}
}

// drain serves the queue until it is empty and reports whether to signal a
// used buffer or a broken queue on irq.
func (d *Device) drain(index int) (irq virtio.Interrupt, signal, broken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queue
	if q == nil || index != 0 {
		return nil, false, false
	}
	r := q.Drain(maxChainsPerNotify, d.serve)
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
