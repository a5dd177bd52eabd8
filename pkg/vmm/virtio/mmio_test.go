// SPDX-License-Identifier: Apache-2.0

package virtio_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

// featureTest is a device-specific feature bit the test device offers.
const featureTest = 1 << 0

// testDevice fills every writable buffer of queue 0 with 'x' on notify.
type testDevice struct {
	config      [8]byte
	activateErr error

	activations int
	resets      int
	features    uint64
	queues      []*virtio.Queue
	irq         virtio.Interrupt
	notifies    []int
}

var _ virtio.Device = (*testDevice)(nil)

func (d *testDevice) Type() virtio.DeviceType { return virtio.DeviceTypeRNG }
func (d *testDevice) Features() uint64 {
	return virtio.QueueFeatures | featureTest | virtio.FeatureRingPacked
}
func (d *testDevice) QueueMaxSizes() []uint16 { return []uint16{8, 16} }
func (d *testDevice) QueueNotify(index int)   { d.notifies = append(d.notifies, index); d.process(index) }
func (d *testDevice) ReadConfig(off uint64, data []byte) {
	if off < uint64(len(d.config)) {
		copy(data, d.config[off:])
	}
}

func (d *testDevice) WriteConfig(off uint64, data []byte) {
	if off < 4 { // only the first word is writable
		copy(d.config[off:4], data)
	}
}

func (d *testDevice) Activate(_ *memory.Memory, queues []*virtio.Queue, irq virtio.Interrupt, features uint64) error {
	if d.activateErr != nil {
		return d.activateErr
	}
	d.activations++
	d.queues, d.irq, d.features = queues, irq, features
	return nil
}

func (d *testDevice) Reset() {
	d.resets++
	d.queues, d.irq = nil, nil
}

func (d *testDevice) process(index int) {
	q := d.queues[index]
	for {
		c, err := q.Pop()
		if err != nil {
			d.irq.SignalNeedsReset()
			return
		}
		if c == nil {
			break
		}
		for c.Available() > 0 {
			_, _ = c.Write([]byte{'x'})
		}
		_ = q.Push(c.Head, c.Written())
	}
	if q.NeedsInterrupt() {
		d.irq.SignalUsedBuffer()
	}
}

type rig struct {
	mem     *memory.Memory
	dev     *testDevice
	mmio    *virtio.MMIO
	q0      *vt.Driver
	injects atomic.Int64
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{mem: vt.NewMemory(t, 0, ramSize), dev: &testDevice{}}
	r.q0 = vt.NewDriver(t, r.mem, queueBase, 8, 0x10000)
	var err error
	r.mmio, err = virtio.NewMMIO(virtio.MMIOConfig{
		Device: r.dev,
		Memory: r.mem,
		Inject: func() { r.injects.Add(1) },
	})
	if err != nil {
		t.Fatalf("NewMMIO() = %v", err)
	}
	return r
}

func (r *rig) reg(off uint64) uint32       { return vt.ReadReg(r.mmio, off) }
func (r *rig) setReg(off uint64, v uint32) { vt.WriteReg(r.mmio, off, v) }

func TestMMIOHandshake(t *testing.T) {
	r := newRig(t)
	if got := r.reg(virtio.MMIODeviceID); got != uint32(virtio.DeviceTypeRNG) {
		t.Errorf("DeviceID = %d, want %d", got, virtio.DeviceTypeRNG)
	}
	offered := vt.DeviceFeatures(r.mmio)
	want := virtio.QueueFeatures | featureTest | virtio.FeatureVersion1
	if offered != want {
		t.Fatalf("device features = %#x, want %#x (VERSION_1 added, RING_PACKED removed)", offered, want)
	}
	if err := vt.Init(r.mmio, vt.Handshake{Queues: []*vt.Driver{r.q0}}); err != nil {
		t.Fatalf("Init() = %v", err)
	}
	if r.dev.activations != 1 || r.dev.features != want {
		t.Fatalf("activations %d features %#x; want 1, %#x", r.dev.activations, r.dev.features, want)
	}
	if len(r.dev.queues) != 2 || r.dev.queues[0] == nil || r.dev.queues[1] != nil {
		t.Fatalf("queues = %v, want [queue, nil]", r.dev.queues)
	}

	p := r.q0.Post(vt.Readable([]byte("req")), vt.Writable(4))
	vt.Kick(r.mmio, 0)
	u, ok := r.q0.PopUsed()
	if !ok || u.ID != uint32(p.Head) || u.Len != 4 {
		t.Fatalf("used = %+v, %v; want id %d len 4", u, ok, p.Head)
	}
	if got := string(r.q0.Bytes(p.Bufs[1].Addr, 4)); got != "xxxx" {
		t.Fatalf("buffer = %q, want xxxx", got)
	}
	if got := r.reg(virtio.MMIOInterruptStatus); got != virtio.InterruptUsedBuffer || r.injects.Load() != 1 {
		t.Fatalf("InterruptStatus = %d, injects %d; want 1, 1", got, r.injects.Load())
	}
	r.setReg(virtio.MMIOInterruptACK, virtio.InterruptUsedBuffer)
	if got := r.reg(virtio.MMIOInterruptStatus); got != 0 {
		t.Fatalf("InterruptStatus after ACK = %d, want 0", got)
	}

	// Notifies for a disabled or missing queue are counted, not delivered.
	vt.Kick(r.mmio, 1)
	vt.Kick(r.mmio, 7)
	if len(r.dev.notifies) != 1 || r.mmio.Metrics().BadNotifies.Load() != 2 {
		t.Fatalf("notifies %v, BadNotifies %d; want [0], 2", r.dev.notifies, r.mmio.Metrics().BadNotifies.Load())
	}

	// Queue registers are frozen after DRIVER_OK.
	bad := r.mmio.Metrics().BadRegisterAccesses.Load()
	r.setReg(virtio.MMIOQueueSel, 0)
	r.setReg(virtio.MMIOQueueNum, 2)
	r.setReg(virtio.MMIOQueueReady, 0)
	if r.reg(virtio.MMIOQueueReady) != 1 || r.mmio.Metrics().BadRegisterAccesses.Load() != bad+2 {
		t.Fatalf("queue registers changed after DRIVER_OK")
	}

	// Reset.
	resets := r.dev.resets
	r.setReg(virtio.MMIOStatus, 0)
	if r.dev.resets != resets+1 || r.reg(virtio.MMIOStatus) != 0 || r.reg(virtio.MMIOQueueReady) != 0 {
		t.Fatalf("after reset: resets %d status %#x ready %d", r.dev.resets, r.reg(virtio.MMIOStatus), r.reg(virtio.MMIOQueueReady))
	}
	// And the device can be brought up again.
	q := vt.NewDriver(t, r.mem, 0x40000, 8, 0x1000)
	if err := vt.Init(r.mmio, vt.Handshake{Features: virtio.FeatureVersion1, Queues: []*vt.Driver{nil, q}}); err != nil {
		t.Fatalf("second Init() = %v", err)
	}
	if r.dev.activations != 2 || r.dev.features != virtio.FeatureVersion1 || r.dev.queues[1] == nil {
		t.Fatalf("second activation: %d, features %#x", r.dev.activations, r.dev.features)
	}
}

func TestMMIOFeatureNegotiation(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		ok       bool
	}{
		{"version 1 only", virtio.FeatureVersion1, true},
		{"all offered", virtio.FeatureVersion1 | virtio.QueueFeatures | featureTest, true},
		{"no version 1", featureTest, false},
		{"unoffered device bit", virtio.FeatureVersion1 | 1<<5, false},
		{"packed ring not offered", virtio.FeatureVersion1 | virtio.FeatureRingPacked, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			err := vt.Init(r.mmio, vt.Handshake{Features: tt.features, Queues: []*vt.Driver{r.q0}})
			if (err == nil) != tt.ok {
				t.Fatalf("Init(features %#x) = %v, want ok %v", tt.features, err, tt.ok)
			}
			if !tt.ok {
				if r.mmio.Metrics().BadFeatures.Load() != 1 || r.dev.activations != 0 {
					t.Fatalf("BadFeatures %d activations %d; want 1, 0", r.mmio.Metrics().BadFeatures.Load(), r.dev.activations)
				}
				if got := r.reg(virtio.MMIOStatus); got&virtio.StatusFeaturesOK != 0 {
					t.Fatalf("status %#x has FEATURES_OK", got)
				}
			}
		})
	}
}

func TestMMIOStatusProtocol(t *testing.T) {
	r := newRig(t)
	m := r.mmio.Metrics()
	ack, drv := virtio.StatusAcknowledge, virtio.StatusAcknowledge|virtio.StatusDriver

	r.setReg(virtio.MMIOStatus, virtio.StatusDriver) // DRIVER without ACKNOWLEDGE
	r.setReg(virtio.MMIOStatus, ack)
	r.setReg(virtio.MMIOStatus, ack|virtio.StatusDriverOK) // DRIVER_OK before FEATURES_OK
	r.setReg(virtio.MMIOStatus, ack|virtio.StatusFeaturesOK)
	r.setReg(virtio.MMIOStatus, 1<<4) // unknown bit
	if got := r.reg(virtio.MMIOStatus); got != ack {
		t.Fatalf("status = %#x, want %#x", got, ack)
	}
	// Queue registers and driver features need the right phase.
	r.setReg(virtio.MMIODriverFeatures, 1)
	r.setReg(virtio.MMIOQueueNum, 4)
	r.setReg(virtio.MMIOStatus, drv)
	r.setReg(virtio.MMIOStatus, ack) // clearing DRIVER
	if got, want := m.BadStatus.Load(), uint64(5); got != want {
		t.Fatalf("BadStatus = %d, want %d", got, want)
	}
	if got := m.BadRegisterAccesses.Load(); got != 2 {
		t.Fatalf("BadRegisterAccesses = %d, want 2", got)
	}
	if got := r.reg(virtio.MMIOStatus); got != drv {
		t.Fatalf("status = %#x, want %#x", got, drv)
	}
}

func TestMMIOQueueConfigRefused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *rig)
	}{
		{"size above max", func(r *rig) { r.setReg(virtio.MMIOQueueNum, 16) }},
		{"size not power of two", func(r *rig) { r.setReg(virtio.MMIOQueueNum, 6) }},
		{"size zero", func(r *rig) { r.setReg(virtio.MMIOQueueNum, 0) }},
		{"ring outside RAM", func(r *rig) { r.setReg(virtio.MMIOQueueDeviceHigh, 1) }},
		{"ring misaligned", func(r *rig) { r.setReg(virtio.MMIOQueueDescLow, queueBase+8) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			drv := virtio.StatusAcknowledge | virtio.StatusDriver
			r.setReg(virtio.MMIOStatus, virtio.StatusAcknowledge)
			r.setReg(virtio.MMIOStatus, drv)
			r.setReg(virtio.MMIODriverFeaturesSel, 1)
			r.setReg(virtio.MMIODriverFeatures, 1) // VERSION_1
			r.setReg(virtio.MMIOStatus, drv|virtio.StatusFeaturesOK)
			r.setReg(virtio.MMIOQueueSel, 0)
			r.setReg(virtio.MMIOQueueNum, 8)
			r.setReg(virtio.MMIOQueueDescLow, uint32(r.q0.DescTable()))
			r.setReg(virtio.MMIOQueueDriverLow, uint32(r.q0.AvailRing()))
			r.setReg(virtio.MMIOQueueDeviceLow, uint32(r.q0.UsedRing()))
			tt.setup(r)
			r.setReg(virtio.MMIOQueueReady, 1)
			r.setReg(virtio.MMIOStatus, drv|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
			if got := r.reg(virtio.MMIOStatus); got&virtio.StatusDeviceNeedsReset == 0 {
				t.Fatalf("status = %#x, want DEVICE_NEEDS_RESET", got)
			}
			if r.dev.activations != 0 || r.mmio.Metrics().BadQueueConfig.Load() != 1 {
				t.Fatalf("activations %d BadQueueConfig %d; want 0, 1", r.dev.activations, r.mmio.Metrics().BadQueueConfig.Load())
			}
			if got := r.reg(virtio.MMIOInterruptStatus); got != virtio.InterruptConfigChange {
				t.Fatalf("InterruptStatus = %d, want config change", got)
			}
			r.setReg(virtio.MMIOStatus, 0)
			if got := r.reg(virtio.MMIOStatus); got != 0 {
				t.Fatalf("status after reset = %#x", got)
			}
		})
	}
}

func TestMMIOActivateFailure(t *testing.T) {
	r := newRig(t)
	r.dev.activateErr = errors.New("no backend")
	if err := vt.Init(r.mmio, vt.Handshake{Queues: []*vt.Driver{r.q0}}); err == nil {
		t.Fatal("Init() = nil with failing Activate")
	}
	if got := r.mmio.Status(); got&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatalf("status = %#x, want DEVICE_NEEDS_RESET", got)
	}
	if r.mmio.Metrics().ActivateFailures.Load() != 1 {
		t.Fatalf("ActivateFailures = %d", r.mmio.Metrics().ActivateFailures.Load())
	}
	vt.Kick(r.mmio, 0)
	if len(r.dev.notifies) != 0 {
		t.Fatal("inactive device notified")
	}
}

func TestMMIONeedsResetFromDevice(t *testing.T) {
	r := newRig(t)
	if err := vt.Init(r.mmio, vt.Handshake{Queues: []*vt.Driver{r.q0}}); err != nil {
		t.Fatal(err)
	}
	r.q0.Publish(200) // head out of range: the device breaks the queue
	vt.Kick(r.mmio, 0)
	if got := r.reg(virtio.MMIOStatus); got&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatalf("status = %#x, want DEVICE_NEEDS_RESET", got)
	}
	if got := r.reg(virtio.MMIOInterruptStatus); got&virtio.InterruptConfigChange == 0 {
		t.Fatalf("InterruptStatus = %d, want config change", got)
	}
	// A driver writing back the status it read is not refused for the
	// device's bit.
	before := r.mmio.Metrics().BadStatus.Load()
	r.setReg(virtio.MMIOStatus, r.reg(virtio.MMIOStatus))
	if r.mmio.Metrics().BadStatus.Load() != before {
		t.Fatal("write-back of status counted as bad")
	}
	stale := r.dev.irq
	r.setReg(virtio.MMIOStatus, 0)
	injects := r.injects.Load()
	stale.SignalUsedBuffer()
	stale.SignalNeedsReset()
	if r.reg(virtio.MMIOInterruptStatus) != 0 || r.reg(virtio.MMIOStatus) != 0 || r.injects.Load() != injects {
		t.Fatal("stale Interrupt changed the transport after reset")
	}
}

func TestMMIOConfigSpace(t *testing.T) {
	r := newRig(t)
	r.dev.config = [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	b := make([]byte, 8)
	r.mmio.Read(virtio.MMIOConfigSpace, b)
	if string(b) != "\x01\x02\x03\x04\x05\x06\x07\x08" {
		t.Fatalf("config = %x", b)
	}
	r.mmio.Read(virtio.MMIOConfigSpace+6, b[:2])
	if b[0] != 7 || b[1] != 8 {
		t.Fatalf("config[6:8] = %x", b[:2])
	}
	r.mmio.Write(virtio.MMIOConfigSpace+1, []byte{0xaa, 0xbb})
	if r.dev.config[1] != 0xaa || r.dev.config[2] != 0xbb {
		t.Fatalf("config after write = %x", r.dev.config)
	}
	r.mmio.Read(virtio.MMIOSize-4, b[:4]) // past the device's space: zeros
	if b[0]|b[1]|b[2]|b[3] != 0 {
		t.Fatalf("config past end = %x", b[:4])
	}
	bad := r.mmio.Metrics().BadRegisterAccesses.Load()
	r.mmio.Read(virtio.MMIOSize-2, b[:4]) // crosses the window
	r.mmio.Read(virtio.MMIOConfigSpace, b[:3])
	r.mmio.Write(virtio.MMIOConfigSpace, make([]byte, 16))
	if got := r.mmio.Metrics().BadRegisterAccesses.Load() - bad; got != 3 {
		t.Fatalf("bad config accesses counted %d, want 3", got)
	}

	if err := vt.Init(r.mmio, vt.Handshake{Queues: []*vt.Driver{r.q0}}); err != nil {
		t.Fatal(err)
	}
	gen := r.reg(virtio.MMIOConfigGeneration)
	r.dev.irq.SignalConfigChange()
	if r.reg(virtio.MMIOConfigGeneration) == gen || r.reg(virtio.MMIOInterruptStatus) != virtio.InterruptConfigChange {
		t.Fatal("SignalConfigChange did not bump generation and raise the config interrupt")
	}
}

func TestMMIOBadAccesses(t *testing.T) {
	tests := []struct {
		name  string
		write bool
		off   uint64
		size  int
	}{
		{"read narrow", false, virtio.MMIOMagicValue, 2},
		{"read wide", false, virtio.MMIOMagicValue, 8},
		{"read unaligned", false, virtio.MMIOMagicValue + 1, 4},
		{"read empty", false, virtio.MMIOMagicValue, 0},
		{"read write-only", false, virtio.MMIOQueueNum, 4},
		{"read unknown", false, 0x0f0, 4},
		{"read queue reset", false, virtio.MMIOQueueReset, 4},
		{"read past window", false, virtio.MMIOSize, 4},
		{"read huge offset", false, ^uint64(0) - 1, 4},
		{"write magic", true, virtio.MMIOMagicValue, 4},
		{"write features", true, virtio.MMIODeviceFeatures, 4},
		{"write interrupt status", true, virtio.MMIOInterruptStatus, 4},
		{"write generation", true, virtio.MMIOConfigGeneration, 4},
		{"write narrow", true, virtio.MMIOStatus, 1},
		{"write unknown", true, 0x0f8, 4},
		{"write huge offset", true, ^uint64(0) - 3, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			data := make([]byte, tt.size)
			for i := range data {
				data[i] = 0xff
			}
			if tt.write {
				r.mmio.Write(tt.off, data)
			} else {
				r.mmio.Read(tt.off, data)
				for _, b := range data {
					if b != 0 {
						t.Fatalf("Read(%#x, %d bytes) = %x, want zeros", tt.off, tt.size, data)
					}
				}
			}
			if got := r.mmio.Metrics().BadRegisterAccesses.Load(); got != 1 {
				t.Fatalf("BadRegisterAccesses = %d, want 1", got)
			}
			if r.reg(virtio.MMIOMagicValue) != virtio.MMIOMagic || r.reg(virtio.MMIOStatus) != 0 {
				t.Fatal("registers changed")
			}
		})
	}
}

func TestMMIOSharedMemoryAbsent(t *testing.T) {
	r := newRig(t)
	for _, off := range []uint64{virtio.MMIOSHMLenLow, virtio.MMIOSHMLenHigh, virtio.MMIOSHMBaseLow, virtio.MMIOSHMBaseHigh} {
		if got := r.reg(off); got != 0xffffffff {
			t.Errorf("register %#x = %#x, want 0xffffffff", off, got)
		}
	}
}

func TestNewMMIOInvalid(t *testing.T) {
	mem := vt.NewMemory(t, 0, 0x1000)
	if _, err := virtio.NewMMIO(virtio.MMIOConfig{Memory: mem}); err == nil {
		t.Error("NewMMIO without device = nil error")
	}
	if _, err := virtio.NewMMIO(virtio.MMIOConfig{Device: &badSizes{}, Memory: mem}); err == nil {
		t.Error("NewMMIO with queue max size 3 = nil error")
	}
}

type badSizes struct{ testDevice }

func (*badSizes) QueueMaxSizes() []uint16 { return []uint16{3} }
