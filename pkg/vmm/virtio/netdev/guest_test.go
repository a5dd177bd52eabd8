// SPDX-License-Identifier: Apache-2.0

package netdev_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/netdev"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

// waitTimeout bounds every wait of the fake guest.
const waitTimeout = 5 * time.Second

// Guest memory layout of the tests: each queue has queueSize descriptors
// and dataSize bytes of buffers.
const (
	queueSize = 16
	dataSize  = 1 << 20
	rxBase    = 0
	txBase    = 2 << 20
	ramSize   = 4 << 20
)

// testMAC is the MAC the tests give the guest.
var testMAC = []byte{0x02, 0x00, 0x5e, 0x10, 0x20, 0x30}

// recorder is a Backend that keeps every frame, optionally failing.
type recorder struct {
	mu     sync.Mutex
	frames [][]byte
	fail   error
	got    chan struct{} // signalled after each frame; buffered for one
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 1)} }

// WriteFrame implements netdev.Backend.
func (r *recorder) WriteFrame(f []byte) error {
	r.mu.Lock()
	err := r.fail
	if err == nil {
		r.frames = append(r.frames, f)
	}
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
	return err
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	r.fail = err
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames)
}

func (r *recorder) frame(i int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames[i]
}

// guest plays a virtio-net driver over fake memory and a real MMIO
// transport.
type guest struct {
	tb     testing.TB
	dev    *netdev.Device
	be     *recorder
	mmio   *virtio.MMIO
	mem    *memory.Memory
	irq    chan struct{}
	rx, tx *vt.Driver
	posted map[uint16]vt.Posted // rx chains by head
}

// newGuest builds a device with cfg (Backend defaults to a recorder, MAC
// to testMAC), a transport and a fake guest, and runs the driver
// handshake. No rx buffers are posted. The device is closed at cleanup.
func newGuest(tb testing.TB, cfg netdev.Config) *guest {
	tb.Helper()
	g := newGuestNoInit(tb, cfg)
	g.init()
	return g
}

// newGuestNoInit is newGuest without the handshake.
func newGuestNoInit(tb testing.TB, cfg netdev.Config) *guest {
	tb.Helper()
	be := newRecorder()
	if cfg.Backend == nil {
		cfg.Backend = be
	}
	if cfg.MAC == nil {
		cfg.MAC = testMAC
	}
	dev, err := netdev.New(cfg)
	if err != nil {
		tb.Fatalf("New(%+v) = %v", cfg, err)
	}
	g := &guest{tb: tb, dev: dev, be: be, mem: vt.NewMemory(tb, 0, ramSize), irq: make(chan struct{}, 1)}
	g.mmio, err = virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: g.mem, Inject: g.inject})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { g.dev.Close() })
	return g
}

// init zeroes the queues, lays them out afresh and runs the handshake.
func (g *guest) init() {
	g.tb.Helper()
	if err := g.mem.Write(0, make([]byte, ramSize)); err != nil {
		g.tb.Fatal(err)
	}
	g.rx = vt.NewDriver(g.tb, g.mem, rxBase, queueSize, dataSize)
	g.tx = vt.NewDriver(g.tb, g.mem, txBase, queueSize, dataSize)
	g.posted = make(map[uint16]vt.Posted)
	if err := vt.Init(g.mmio, vt.Handshake{Queues: []*vt.Driver{g.rx, g.tx}}); err != nil {
		g.tb.Fatalf("Init: %v", err)
	}
}

func (g *guest) inject() {
	select {
	case g.irq <- struct{}{}:
	default:
	}
}

// reset writes 0 to the status register: the driver resets the device.
func (g *guest) reset() { vt.WriteReg(g.mmio, virtio.MMIOStatus, 0) }

// status reads the device status register.
func (g *guest) status() uint32 { return vt.ReadReg(g.mmio, virtio.MMIOStatus) }

// waitFor polls cond, under the guest lock, until it holds, waking on
// interrupts or every few milliseconds, and fails the test after
// waitTimeout.
func (g *guest) waitFor(what string, cond func() bool) {
	g.tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok := func() bool {
			unlock := netdev.LockGuest(g.dev)
			defer unlock() // cond may fail the test
			return cond()
		}()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			g.tb.Fatalf("guest: timed out waiting for %s", what)
		}
		select {
		case <-g.irq:
		case <-g.be.got:
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// postRx posts one rx chain of the given buffers and kicks the rx queue.
func (g *guest) postRx(bufs ...vt.Buf) vt.Posted {
	g.tb.Helper()
	unlock := netdev.LockGuest(g.dev)
	p := g.rx.Post(bufs...)
	g.posted[p.Head] = p
	unlock()
	vt.Kick(g.mmio, 0)
	return p
}

// rxFrame is a received rx chain: its used length and the bytes the device
// wrote, split into header and frame.
type rxFrame struct {
	used  uint32
	hdr   netdev.Header
	frame []byte
}

// recvRx waits for the next used rx chain and returns what it holds.
func (g *guest) recvRx() rxFrame {
	g.tb.Helper()
	var e vt.UsedElem
	var data []byte
	g.waitFor("an rx buffer", func() bool {
		var ok bool
		if e, ok = g.rx.PopUsed(); !ok {
			return false
		}
		p, found := g.posted[uint16(e.ID)]
		if !found {
			g.tb.Fatalf("guest: used rx id %d was not posted", e.ID)
		}
		for _, b := range p.Bufs {
			if b.Write {
				data = append(data, g.rx.Bytes(b.Addr, b.Len)...)
			}
		}
		return true
	})
	if uint64(e.Len) > uint64(len(data)) {
		g.tb.Fatalf("guest: used length %d exceeds the %d writable bytes", e.Len, len(data))
	}
	data = data[:e.Len]
	r := rxFrame{used: e.Len}
	if len(data) >= netdev.HeaderSize {
		r.hdr, r.frame = netdev.Header(data[:netdev.HeaderSize]), data[netdev.HeaderSize:]
	}
	return r
}

// rxUsedIdx reads the rx used index under the guest lock.
func (g *guest) rxUsedIdx() uint16 {
	unlock := netdev.LockGuest(g.dev)
	defer unlock()
	return g.rx.UsedIdx()
}

// sendTx posts one tx chain and kicks the tx queue.
func (g *guest) sendTx(bufs ...vt.Buf) vt.Posted {
	g.tb.Helper()
	unlock := netdev.LockGuest(g.dev)
	p := g.tx.Post(bufs...)
	unlock()
	vt.Kick(g.mmio, 1)
	return p
}

// txUsed waits for the device to use the next tx chain and returns it.
func (g *guest) txUsed() vt.UsedElem {
	g.tb.Helper()
	var e vt.UsedElem
	g.waitFor("a used tx chain", func() bool {
		var ok bool
		e, ok = g.tx.PopUsed()
		return ok
	})
	return e
}

// txHeader returns a virtio_net_hdr as a Linux guest without offloads
// sends it: all zero (num_buffers is unused on tx).
func txHeader() []byte { return make([]byte, netdev.HeaderSize) }

// ethFrame returns an Ethernet frame of n bytes (at least 14) with a
// recognisable pattern.
func ethFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00})
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i)
	}
	return f
}

// concat joins byte slices.
func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
