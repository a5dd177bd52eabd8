// SPDX-License-Identifier: Apache-2.0

package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
)

// MMIO register offsets (virtio 1.2 §4.2.2, table "MMIO Device Register
// Layout"). All control registers are 32 bits wide and must be accessed with
// aligned 32-bit accesses; the device-specific configuration space starts at
// MMIOConfigSpace.
const (
	MMIOMagicValue        = 0x000 // R: MMIOMagic
	MMIOVersion           = 0x004 // R: 2, the modern interface
	MMIODeviceID          = 0x008 // R: DeviceType
	MMIOVendorID          = 0x00c // R: vendor ID
	MMIODeviceFeatures    = 0x010 // R: 32 feature bits selected by MMIODeviceFeaturesSel
	MMIODeviceFeaturesSel = 0x014 // W: word of device features to read (0 or 1)
	MMIODriverFeatures    = 0x020 // W: 32 acknowledged feature bits selected by MMIODriverFeaturesSel
	MMIODriverFeaturesSel = 0x024 // W: word of driver features to write (0 or 1)
	MMIOQueueSel          = 0x030 // W: queue the MMIOQueue* registers refer to
	MMIOQueueNumMax       = 0x034 // R: maximum size of the selected queue, 0 if none
	MMIOQueueNum          = 0x038 // W: size the driver chose for the selected queue
	MMIOQueueReady        = 0x044 // RW: the selected queue is configured and usable
	MMIOQueueNotify       = 0x050 // W: index of a queue with new available buffers
	MMIOInterruptStatus   = 0x060 // R: pending InterruptUsedBuffer | InterruptConfigChange
	MMIOInterruptACK      = 0x064 // W: interrupt bits the driver has handled
	MMIOStatus            = 0x070 // RW: device status (§2.1), 0 resets the device
	MMIOQueueDescLow      = 0x080 // W: descriptor table address, low 32 bits
	MMIOQueueDescHigh     = 0x084 // W: descriptor table address, high 32 bits
	MMIOQueueDriverLow    = 0x090 // W: available ring address, low 32 bits
	MMIOQueueDriverHigh   = 0x094 // W: available ring address, high 32 bits
	MMIOQueueDeviceLow    = 0x0a0 // W: used ring address, low 32 bits
	MMIOQueueDeviceHigh   = 0x0a4 // W: used ring address, high 32 bits
	MMIOSHMSel            = 0x0ac // W: shared memory region to describe
	MMIOSHMLenLow         = 0x0b0 // R: selected region length, low 32 bits
	MMIOSHMLenHigh        = 0x0b4 // R: selected region length, high 32 bits
	MMIOSHMBaseLow        = 0x0b8 // R: selected region address, low 32 bits
	MMIOSHMBaseHigh       = 0x0bc // R: selected region address, high 32 bits
	MMIOQueueReset        = 0x0c0 // RW: per-queue reset, only with VIRTIO_F_RING_RESET (never offered)
	MMIOConfigGeneration  = 0x0fc // R: changes when the configuration space changes
	MMIOConfigSpace       = 0x100 // RW: start of the device configuration space
)

// MMIO transport constants (virtio 1.2 §4.2.2).
const (
	// MMIOMagic is the value of MMIOMagicValue: "virt" little-endian.
	MMIOMagic = 0x74726976
	// MMIOVersionModern is the value of MMIOVersion for virtio 1.x devices.
	MMIOVersionModern = 2
	// MMIOSize is the size of one device's register window; devices are
	// declared to Linux as virtio_mmio.device=4K@<base>:<irq>.
	MMIOSize = 0x1000
)

// Interrupt status bits (virtio 1.2 §4.2.2, InterruptStatus).
const (
	// InterruptUsedBuffer is set when the device used buffers in a queue.
	InterruptUsedBuffer uint32 = 1
	// InterruptConfigChange is set when the configuration space changed or
	// the device set DEVICE_NEEDS_RESET.
	InterruptConfigChange uint32 = 2
)

// maxQueues bounds Device.QueueMaxSizes; QueueSel is 32 bits but no device
// has anywhere near this many queues.
const maxQueues = 1024

// driverStatusBits are the status bits a driver may set (§2.1).
const driverStatusBits = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK | StatusFailed

// MMIOConfig configures a virtio-mmio transport.
type MMIOConfig struct {
	// Device is the device model behind the transport. Required.
	Device Device
	// Memory is guest RAM; the queues live in it. Required.
	Memory *memory.Memory
	// Inject raises the device's interrupt line (the VMM wires it to an
	// irqfd). It is called after an interrupt status bit is set, from
	// whichever goroutine signalled, possibly with the transport's lock
	// held, so it must not call back into the MMIO. Nil means no line:
	// the status bits still change.
	Inject func()
	// VendorID is the value of the VendorID register; zero reads as zero.
	VendorID uint32
	// Metrics receives the transport's and its queues' counters; nil means
	// a private set, see MMIO.Metrics.
	Metrics *Metrics
}

// queueRegs is the driver's configuration of one queue.
type queueRegs struct {
	num                 uint32
	ready               bool
	desc, driver, devic uint64
}

// MMIO is a virtio-mmio transport (version 2) for one device. The VMM calls
// Read and Write for guest accesses to the device's register window; every
// value written is guest-controlled and checked.
type MMIO struct {
	dev      Device
	mem      *memory.Memory
	inject   func()
	vendor   uint32
	m        *Metrics
	offered  uint64
	maxSizes []uint16

	mu             sync.Mutex // guards the fields below and serialises Device calls
	status         uint32     // driver-written bits (never StatusDeviceNeedsReset)
	devFeaturesSel uint32
	drvFeaturesSel uint32
	driverFeatures uint64
	queueSel       uint32
	shmSel         uint32
	queues         []queueRegs
	activated      bool

	// Atomics, written by the device's Interrupt without mu.
	intStatus  atomic.Uint32
	needsReset atomic.Bool
	configGen  atomic.Uint32
	gen        atomic.Uint64 // activation generation: stale Interrupts compare it
}

// NewMMIO returns a transport for cfg.Device in its reset state. It checks
// the device's queue sizes (1 to 1024 queues, each a power of two no larger
// than MaxQueueSize).
func NewMMIO(cfg MMIOConfig) (*MMIO, error) {
	if cfg.Device == nil || cfg.Memory == nil {
		return nil, errors.New("virtio: mmio: device and memory are required")
	}
	sizes := append([]uint16(nil), cfg.Device.QueueMaxSizes()...)
	if len(sizes) == 0 || len(sizes) > maxQueues {
		return nil, fmt.Errorf("virtio: mmio: device has %d queues", len(sizes))
	}
	for i, s := range sizes {
		if s == 0 || s > MaxQueueSize || s&(s-1) != 0 {
			return nil, fmt.Errorf("virtio: mmio: queue %d max size %d is not a power of two up to %d", i, s, MaxQueueSize)
		}
	}
	t := &MMIO{
		dev:      cfg.Device,
		mem:      cfg.Memory,
		inject:   cfg.Inject,
		vendor:   cfg.VendorID,
		m:        cfg.Metrics,
		offered:  (cfg.Device.Features() | FeatureVersion1) &^ unsupportedFeatures,
		maxSizes: sizes,
		queues:   make([]queueRegs, len(sizes)),
	}
	if t.m == nil {
		t.m = new(Metrics)
	}
	t.resetRegsLocked()
	return t, nil
}

// Metrics returns the transport's counters.
func (t *MMIO) Metrics() *Metrics { return t.m }

// InterruptStatus returns the pending interrupt bits, as the guest reads them.
func (t *MMIO) InterruptStatus() uint32 { return t.intStatus.Load() }

// Status returns the device status, as the guest reads it.
func (t *MMIO) Status() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.statusLocked()
}

func (t *MMIO) statusLocked() uint32 {
	s := t.status
	if t.needsReset.Load() {
		s |= StatusDeviceNeedsReset
	}
	return s
}

// bad counts an ignored register access.
func (t *MMIO) bad() { t.m.BadRegisterAccesses.Add(1) }

// Read handles a guest read of len(data) bytes at offset in the register
// window. Control registers need an aligned 4-byte access; the configuration
// space takes 1, 2, 4 or 8 bytes. Any other access is counted and reads as
// zero. Read never panics.
func (t *MMIO) Read(offset uint64, data []byte) {
	clear(data)
	if offset >= MMIOConfigSpace {
		if !t.configAccessOK(offset, data) {
			t.bad()
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		t.dev.ReadConfig(offset-MMIOConfigSpace, data)
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		t.bad()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var v uint32
	switch offset {
	case MMIOMagicValue:
		v = MMIOMagic
	case MMIOVersion:
		v = MMIOVersionModern
	case MMIODeviceID:
		v = uint32(t.dev.Type())
	case MMIOVendorID:
		v = t.vendor
	case MMIODeviceFeatures:
		switch t.devFeaturesSel {
		case 0:
			v = uint32(t.offered)
		case 1:
			v = uint32(t.offered >> 32)
		}
	case MMIOQueueNumMax:
		if q := t.queueSel; q < uint32(len(t.maxSizes)) {
			v = uint32(t.maxSizes[q])
		}
	case MMIOQueueReady:
		if q := t.queueSel; q < uint32(len(t.queues)) && t.queues[q].ready {
			v = 1
		}
	case MMIOInterruptStatus:
		v = t.intStatus.Load()
	case MMIOStatus:
		v = t.statusLocked()
	case MMIOConfigGeneration:
		v = t.configGen.Load()
	case MMIOSHMLenLow, MMIOSHMLenHigh, MMIOSHMBaseLow, MMIOSHMBaseHigh:
		// No shared memory regions: a non-existent region reads as
		// length and base -1 (§4.2.2).
		v = ^uint32(0)
	default:
		t.bad() // write-only or unknown register
		return
	}
	binary.LittleEndian.PutUint32(data, v)
}

// configAccessOK reports whether an access to the configuration space has a
// supported width and stays inside the register window.
func (t *MMIO) configAccessOK(offset uint64, data []byte) bool {
	switch len(data) {
	case 1, 2, 4, 8:
	default:
		return false
	}
	return offset <= MMIOSize-uint64(len(data))
}

// Write handles a guest write of data at offset in the register window.
// Accesses with a bad width or alignment, to read-only or unknown registers,
// or not allowed in the current device status are counted and ignored.
// Write never panics.
func (t *MMIO) Write(offset uint64, data []byte) {
	if offset >= MMIOConfigSpace {
		if !t.configAccessOK(offset, data) {
			t.bad()
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		t.dev.WriteConfig(offset-MMIOConfigSpace, data)
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		t.bad()
		return
	}
	v := binary.LittleEndian.Uint32(data)
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case MMIODeviceFeaturesSel:
		t.devFeaturesSel = v
	case MMIODriverFeaturesSel:
		t.drvFeaturesSel = v
	case MMIODriverFeatures:
		// §3.1.1: features are acknowledged after DRIVER and before
		// FEATURES_OK.
		st := t.statusLocked()
		if st&StatusDriver == 0 || st&(StatusFeaturesOK|StatusFailed|StatusDeviceNeedsReset) != 0 {
			t.bad()
			return
		}
		switch t.drvFeaturesSel {
		case 0:
			t.driverFeatures = t.driverFeatures&^0xffffffff | uint64(v)
		case 1:
			t.driverFeatures = t.driverFeatures&0xffffffff | uint64(v)<<32
		default:
			t.bad()
		}
	case MMIOQueueSel:
		t.queueSel = v
	case MMIOQueueNum, MMIOQueueDescLow, MMIOQueueDescHigh, MMIOQueueDriverLow,
		MMIOQueueDriverHigh, MMIOQueueDeviceLow, MMIOQueueDeviceHigh:
		q := t.configurableQueueLocked()
		if q == nil || q.ready {
			t.bad() // §4.2.2.3: configure a queue only while it is not ready
			return
		}
		switch offset {
		case MMIOQueueNum:
			q.num = v
		case MMIOQueueDescLow:
			q.desc = q.desc&^0xffffffff | uint64(v)
		case MMIOQueueDescHigh:
			q.desc = q.desc&0xffffffff | uint64(v)<<32
		case MMIOQueueDriverLow:
			q.driver = q.driver&^0xffffffff | uint64(v)
		case MMIOQueueDriverHigh:
			q.driver = q.driver&0xffffffff | uint64(v)<<32
		case MMIOQueueDeviceLow:
			q.devic = q.devic&^0xffffffff | uint64(v)
		case MMIOQueueDeviceHigh:
			q.devic = q.devic&0xffffffff | uint64(v)<<32
		}
	case MMIOQueueReady:
		q := t.configurableQueueLocked()
		if q == nil || v > 1 {
			t.bad()
			return
		}
		q.ready = v == 1
	case MMIOQueueNotify:
		if !t.activated || v >= uint32(len(t.queues)) || !t.queues[v].ready {
			t.m.BadNotifies.Add(1)
			return
		}
		t.dev.QueueNotify(int(v))
	case MMIOInterruptACK:
		t.intStatus.And(^v)
	case MMIOStatus:
		t.setStatusLocked(v)
	case MMIOSHMSel:
		t.shmSel = v
	default:
		t.bad() // read-only or unknown register
	}
}

// configurableQueueLocked returns the selected queue if the driver may
// configure queues now: after FEATURES_OK and before DRIVER_OK (§3.1.1
// step 7), and not after a failure.
func (t *MMIO) configurableQueueLocked() *queueRegs {
	st := t.statusLocked()
	if st&StatusFeaturesOK == 0 || st&(StatusDriverOK|StatusFailed|StatusDeviceNeedsReset) != 0 {
		return nil
	}
	if t.queueSel >= uint32(len(t.queues)) {
		return nil
	}
	return &t.queues[t.queueSel]
}

// setStatusLocked applies a driver write to the status register, following
// the initialisation sequence of §3.1.1:
//
//  1. 0 resets the device (§2.4).
//  2. Otherwise the driver may only add bits, and only bits it owns.
//  3. DRIVER needs ACKNOWLEDGE.
//  4. FEATURES_OK needs DRIVER and is refused (left clear, for the driver to
//     read back) unless the acknowledged features are a subset of those
//     offered and include VIRTIO_F_VERSION_1 (§2.2.1, §6.1).
//  5. DRIVER_OK needs FEATURES_OK; it builds the ready queues and activates
//     the device. A refused queue or a failed activation sets
//     DEVICE_NEEDS_RESET.
func (t *MMIO) setStatusLocked(v uint32) {
	if v == 0 {
		t.resetLocked()
		return
	}
	// DEVICE_NEEDS_RESET is the device's bit: a driver writing back what it
	// read must not be refused for it, nor set it.
	v &^= StatusDeviceNeedsReset
	old := t.status
	if v&^driverStatusBits != 0 || v&old != old {
		t.m.BadStatus.Add(1)
		return
	}
	set := v &^ old
	if v&StatusDriver != 0 && v&StatusAcknowledge == 0 {
		t.m.BadStatus.Add(1)
		return
	}
	if set&StatusFeaturesOK != 0 {
		if v&StatusDriver == 0 {
			t.m.BadStatus.Add(1)
			return
		}
		if t.driverFeatures&^t.offered != 0 || t.driverFeatures&FeatureVersion1 == 0 {
			t.m.BadFeatures.Add(1)
			v &^= StatusFeaturesOK
			set &^= StatusFeaturesOK
		}
	}
	if set&StatusDriverOK != 0 {
		if old&StatusFeaturesOK == 0 || t.needsReset.Load() || old&StatusFailed != 0 {
			t.m.BadStatus.Add(1)
			return
		}
		t.status = v
		t.activateLocked()
		return
	}
	t.status = v
}

// activateLocked builds the ready queues and activates the device.
func (t *MMIO) activateLocked() {
	queues := make([]*Queue, len(t.queues))
	for i, qr := range t.queues {
		if !qr.ready {
			continue
		}
		if qr.num > uint32(t.maxSizes[i]) {
			t.m.BadQueueConfig.Add(1)
			t.needsResetLocked()
			return
		}
		q, err := NewQueue(t.mem, QueueConfig{
			Index:     i,
			Size:      uint16(qr.num), // qr.num <= maxSizes[i] <= MaxQueueSize
			DescTable: memory.GuestAddr(qr.desc),
			AvailRing: memory.GuestAddr(qr.driver),
			UsedRing:  memory.GuestAddr(qr.devic),
			Indirect:  t.driverFeatures&FeatureIndirectDesc != 0,
			EventIdx:  t.driverFeatures&FeatureEventIdx != 0,
			Metrics:   t.m,
		})
		if err != nil {
			t.m.BadQueueConfig.Add(1)
			t.needsResetLocked()
			return
		}
		queues[i] = q
	}
	irq := &mmioInterrupt{t: t, gen: t.gen.Load()}
	if err := t.dev.Activate(t.mem, queues, irq, t.driverFeatures); err != nil {
		t.m.ActivateFailures.Add(1)
		t.needsResetLocked()
		return
	}
	t.activated = true
}

// needsResetLocked sets DEVICE_NEEDS_RESET for a transport-detected fault.
func (t *MMIO) needsResetLocked() {
	t.needsReset.Store(true)
	t.m.NeedsReset.Add(1)
	t.raise(InterruptConfigChange)
}

// resetLocked performs a device reset (§2.4): the device first, so that it
// stops using the queues, then the transport's registers.
func (t *MMIO) resetLocked() {
	t.gen.Add(1) // Interrupts handed out so far go quiet
	t.dev.Reset()
	t.resetRegsLocked()
}

func (t *MMIO) resetRegsLocked() {
	t.status = 0
	t.devFeaturesSel, t.drvFeaturesSel = 0, 0
	t.driverFeatures = 0
	t.queueSel, t.shmSel = 0, 0
	for i := range t.queues {
		t.queues[i] = queueRegs{num: uint32(t.maxSizes[i])}
	}
	t.activated = false
	t.intStatus.Store(0)
	t.needsReset.Store(false)
}

// raise sets interrupt status bits and injects the interrupt.
func (t *MMIO) raise(bits uint32) {
	t.intStatus.Or(bits)
	if t.inject != nil {
		t.inject()
	}
}

// mmioInterrupt is the Interrupt given to a device on activation. It only
// touches atomics, so the device may call it from anywhere, including from
// inside Activate with the transport's lock held.
type mmioInterrupt struct {
	t   *MMIO
	gen uint64
}

var _ Interrupt = (*mmioInterrupt)(nil)

// live reports whether the device has not been reset since activation. A
// signal racing with a reset may still set a status bit; the driver treats
// a spurious interrupt as harmless.
func (i *mmioInterrupt) live() bool { return i.t.gen.Load() == i.gen }

// SignalUsedBuffer implements Interrupt.
func (i *mmioInterrupt) SignalUsedBuffer() {
	if i.live() {
		i.t.raise(InterruptUsedBuffer)
	}
}

// SignalConfigChange implements Interrupt.
func (i *mmioInterrupt) SignalConfigChange() {
	if i.live() {
		i.t.configGen.Add(1)
		i.t.raise(InterruptConfigChange)
	}
}

// SignalNeedsReset implements Interrupt.
func (i *mmioInterrupt) SignalNeedsReset() {
	if i.live() && !i.t.needsReset.Swap(true) {
		i.t.m.NeedsReset.Add(1)
		i.t.raise(InterruptConfigChange)
	}
}
