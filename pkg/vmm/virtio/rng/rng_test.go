// SPDX-License-Identifier: Apache-2.0

package rng_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/rng"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

const (
	ramSize   = 1 << 20
	queueSize = 16
)

// rig is an entropy device behind the MMIO transport with a fake guest.
type rig struct {
	dev  *rng.Device
	mmio *virtio.MMIO
	drv  *vt.Driver
}

func newRig(t *testing.T, features uint64) *rig {
	t.Helper()
	mem := vt.NewMemory(t, 0, ramSize)
	dev := rng.New()
	m, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem})
	if err != nil {
		t.Fatalf("NewMMIO() = %v", err)
	}
	drv := vt.NewDriver(t, mem, 0, queueSize, ramSize-0x1000)
	if err := vt.Init(m, vt.Handshake{Features: features, Queues: []*vt.Driver{drv}}); err != nil {
		t.Fatalf("Init() = %v", err)
	}
	return &rig{dev: dev, mmio: m, drv: drv}
}

// used kicks the queue and returns the next used element.
func (r *rig) used(t *testing.T) vt.UsedElem {
	t.Helper()
	vt.Kick(r.mmio, 0)
	u, ok := r.drv.PopUsed()
	if !ok {
		t.Fatalf("no used element after kick")
	}
	return u
}

func TestIdentity(t *testing.T) {
	d := rng.New()
	if got := d.Type(); got != virtio.DeviceTypeRNG {
		t.Errorf("Type() = %d, want %d", got, virtio.DeviceTypeRNG)
	}
	if got := d.QueueMaxSizes(); len(got) != 1 || got[0] != rng.QueueSize {
		t.Errorf("QueueMaxSizes() = %v, want [%d]", got, rng.QueueSize)
	}
	data := []byte{1, 2, 3, 4}
	d.WriteConfig(0, data)
	d.ReadConfig(0, data)
	if !bytes.Equal(data, make([]byte, 4)) {
		t.Errorf("ReadConfig(0) = %x, want zeros", data)
	}
}

// nonConstant reports whether b has at least two distinct byte values.
func nonConstant(b []byte) bool {
	for _, c := range b[1:] {
		if c != b[0] {
			return true
		}
	}
	return false
}

func TestFill(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		indirect bool
		bufs     []vt.Buf
		want     uint32
	}{
		{"one buffer", 0, false, []vt.Buf{vt.Writable(64)}, 64},
		{"several buffers", 0, false, []vt.Buf{vt.Writable(32), vt.Writable(0), vt.Writable(100)}, 132},
		{"readable ignored", 0, false, []vt.Buf{vt.Readable([]byte("ignored")), vt.Writable(48)}, 48},
		{"indirect", 0, true, []vt.Buf{vt.Writable(40), vt.Writable(40)}, 80},
		{"capped", 0, false, []vt.Buf{vt.Writable(rng.MaxRequestBytes - 10), vt.Writable(100)}, rng.MaxRequestBytes},
		{"no writable", 0, false, []vt.Buf{vt.Readable([]byte("x"))}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.features)
			var p vt.Posted
			if tt.indirect {
				p = r.drv.PostIndirect(tt.bufs...)
			} else {
				p = r.drv.Post(tt.bufs...)
			}
			u := r.used(t)
			if u.ID != uint32(p.Head) || u.Len != tt.want {
				t.Fatalf("used = %+v, want {ID:%d Len:%d}", u, p.Head, tt.want)
			}
			if got := r.mmio.InterruptStatus(); got&virtio.InterruptUsedBuffer == 0 {
				t.Errorf("InterruptStatus() = %#x, want used-buffer bit", got)
			}
			for i, b := range p.Bufs {
				if !b.Write || b.Len < 16 {
					continue
				}
				if got := r.drv.Bytes(b.Addr, 16); !nonConstant(got) {
					t.Errorf("buffer %d = %x, want random bytes", i, got)
				}
			}
			if got := r.dev.Metrics().Bytes.Load(); got != uint64(tt.want) {
				t.Errorf("Metrics().Bytes = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestBuffersDiffer(t *testing.T) {
	r := newRig(t, 0)
	a := r.drv.Post(vt.Writable(32))
	b := r.drv.Post(vt.Writable(32))
	vt.Kick(r.mmio, 0)
	x, y := r.drv.Bytes(a.Bufs[0].Addr, 32), r.drv.Bytes(b.Bufs[0].Addr, 32)
	if bytes.Equal(x, y) {
		t.Errorf("two requests got the same bytes %x", x)
	}
	if got := r.dev.Metrics().Requests.Load(); got != 2 {
		t.Errorf("Metrics().Requests = %d, want 2", got)
	}
}

func TestBadChain(t *testing.T) {
	r := newRig(t, 0)
	// A readable descriptor after a writable one (§2.7.4.2).
	buf := r.drv.Alloc(16)
	r.drv.SetDesc(0, vt.Desc{Addr: uint64(buf), Len: 8, Flags: vt.FlagWrite | vt.FlagNext, Next: 1})
	r.drv.SetDesc(1, vt.Desc{Addr: uint64(buf) + 8, Len: 8})
	r.drv.Publish(0)
	u := r.used(t)
	if u.ID != 0 || u.Len != 0 {
		t.Errorf("used = %+v, want {ID:0 Len:0}", u)
	}
	if got := r.dev.Metrics().BadChains.Load(); got != 1 {
		t.Errorf("Metrics().BadChains = %d, want 1", got)
	}
	if got := r.mmio.Status(); got&virtio.StatusDeviceNeedsReset != 0 {
		t.Errorf("Status() = %#x, want no NEEDS_RESET for a bad chain", got)
	}
}

func TestBrokenQueue(t *testing.T) {
	r := newRig(t, 0)
	r.drv.Publish(queueSize + 3) // head outside the queue
	vt.Kick(r.mmio, 0)
	if got := r.mmio.Status(); got&virtio.StatusDeviceNeedsReset == 0 {
		t.Errorf("Status() = %#x, want NEEDS_RESET", got)
	}
	if got := r.dev.Metrics().QueueBroken.Load(); got != 1 {
		t.Errorf("Metrics().QueueBroken = %d, want 1", got)
	}
}

func TestResetStopsService(t *testing.T) {
	r := newRig(t, 0)
	r.drv.Post(vt.Writable(8))
	r.dev.Reset()
	r.dev.QueueNotify(0)
	if _, ok := r.drv.PopUsed(); ok {
		t.Errorf("device served a request after Reset")
	}
}

func TestActivateWithoutQueue(t *testing.T) {
	d := rng.New()
	if err := d.Activate(nil, []*virtio.Queue{nil}, new(vt.Interrupt), 0); err == nil {
		t.Errorf("Activate(no queue) = nil, want an error")
	}
	d.QueueNotify(0) // not active: nothing to do, no panic
	d.QueueNotify(5)
}

// TestConcurrent runs notifies, resets and activations from several
// goroutines; run with -race.
func TestConcurrent(t *testing.T) {
	mem := vt.NewMemory(t, 0, ramSize)
	drv := vt.NewDriver(t, mem, 0, queueSize, ramSize-0x1000)
	for range queueSize {
		drv.Post(vt.Writable(8))
	}
	d := rng.New()
	irq := new(vt.Interrupt)
	activate := func() {
		q, err := virtio.NewQueue(mem, drv.QueueConfig())
		if err != nil {
			t.Errorf("NewQueue() = %v", err)
			return
		}
		if err := d.Activate(mem, []*virtio.Queue{q}, irq, 0); err != nil {
			t.Errorf("Activate() = %v", err)
		}
	}
	activate()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 50 {
				switch g {
				case 0:
					d.Reset()
					activate()
				default:
					d.QueueNotify(0)
				}
			}
		})
	}
	wg.Wait()
}
