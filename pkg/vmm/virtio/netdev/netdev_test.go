// SPDX-License-Identifier: Apache-2.0

package netdev_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/leaktest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/netdev"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

var nopBackend = netdev.BackendFunc(func([]byte) error { return nil })

func TestNew(t *testing.T) {
	bad := []struct {
		name string
		cfg  netdev.Config
	}{
		{"no backend", netdev.Config{}},
		{"short mac", netdev.Config{Backend: nopBackend, MAC: net.HardwareAddr{2, 0, 0, 0, 0}}},
		{"multicast mac", netdev.Config{Backend: nopBackend, MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}}},
		{"zero mac", netdev.Config{Backend: nopBackend, MAC: make(net.HardwareAddr, 6)}},
		{"small mtu", netdev.Config{Backend: nopBackend, MTU: 67}},
		{"large mtu", netdev.Config{Backend: nopBackend, MTU: 65536}},
		{"negative mtu", netdev.Config{Backend: nopBackend, MTU: -1}},
		{"queue size", netdev.Config{Backend: nopBackend, QueueSize: 100}},
		{"rx queue negative", netdev.Config{Backend: nopBackend, RxQueueLen: -1}},
		{"rx queue large", netdev.Config{Backend: nopBackend, RxQueueLen: netdev.MaxRxQueueLen + 1}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := netdev.New(tc.cfg); !errors.Is(err, netdev.ErrConfig) {
				t.Errorf("New(%+v) = %v, want ErrConfig", tc.cfg, err)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		d, err := netdev.New(netdev.Config{Backend: nopBackend})
		if err != nil {
			t.Fatal(err)
		}
		if d.MTU() != 1500 || d.MaxFrameLen() != 1518 || d.MAC() != nil || !d.LinkUp() {
			t.Errorf("MTU %d MaxFrameLen %d MAC %v LinkUp %v, want 1500 1518 nil true", d.MTU(), d.MaxFrameLen(), d.MAC(), d.LinkUp())
		}
		if got := d.QueueMaxSizes(); len(got) != 2 || got[0] != 256 || got[1] != 256 {
			t.Errorf("QueueMaxSizes() = %v, want [256 256]", got)
		}
		if got, want := d.Features(), netdev.FeatureMTU|netdev.FeatureStatus|virtio.QueueFeatures; got != want {
			t.Errorf("Features() = %#x, want %#x", got, want)
		}
	})
	t.Run("all problems reported", func(t *testing.T) {
		_, err := netdev.New(netdev.Config{MTU: 1, QueueSize: 3})
		for _, s := range []string{"backend", "mtu", "queue size"} {
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(s)) {
				t.Errorf("New error %v does not mention %q", err, s)
			}
		}
	})
}

func TestHandshake(t *testing.T) {
	g := newGuest(t, netdev.Config{})
	if got := vt.ReadReg(g.mmio, virtio.MMIODeviceID); got != uint32(virtio.DeviceTypeNet) {
		t.Errorf("device ID = %d, want %d", got, virtio.DeviceTypeNet)
	}
	want := netdev.FeatureMAC | netdev.FeatureMTU | netdev.FeatureStatus |
		virtio.FeatureIndirectDesc | virtio.FeatureEventIdx | virtio.FeatureVersion1
	if got := vt.DeviceFeatures(g.mmio); got != want {
		t.Errorf("device features = %#x, want %#x", got, want)
	}
	for q, want := range []uint32{256, 256, 0} {
		vt.WriteReg(g.mmio, virtio.MMIOQueueSel, uint32(q))
		if got := vt.ReadReg(g.mmio, virtio.MMIOQueueNumMax); got != want {
			t.Errorf("queue %d max size = %d, want %d", q, got, want)
		}
	}
	if st := g.status(); st&virtio.StatusDriverOK == 0 || st&virtio.StatusDeviceNeedsReset != 0 {
		t.Errorf("status = %#x after the handshake", st)
	}
}

func TestActivateNeedsBothQueues(t *testing.T) {
	g := newGuestNoInit(t, netdev.Config{})
	g.init() // lays out the drivers; now redo the handshake with tx only
	err := vt.Init(g.mmio, vt.Handshake{Queues: []*vt.Driver{nil, g.tx}})
	if err == nil {
		t.Fatalf("Init without rx queue succeeded")
	}
	if st := g.status(); st&virtio.StatusDeviceNeedsReset == 0 {
		t.Errorf("status = %#x, want DEVICE_NEEDS_RESET", st)
	}
}

func TestConfigSpace(t *testing.T) {
	g := newGuest(t, netdev.Config{MTU: 9000})
	read := func(off uint64, n int) []byte {
		b := make([]byte, n)
		g.mmio.Read(virtio.MMIOConfigSpace+off, b)
		return b
	}
	var mac []byte
	for i := range uint64(6) {
		mac = append(mac, read(i, 1)...)
	}
	if !bytes.Equal(mac, testMAC) {
		t.Errorf("mac = % x, want % x", mac, testMAC)
	}
	if got := binary.LittleEndian.Uint16(read(6, 2)); got != netdev.StatusLinkUp {
		t.Errorf("status = %d, want %d", got, netdev.StatusLinkUp)
	}
	if got := binary.LittleEndian.Uint16(read(10, 2)); got != 9000 {
		t.Errorf("mtu = %d, want 9000", got)
	}
	if got := binary.LittleEndian.Uint32(read(8, 4)); got != 1|9000<<16 {
		t.Errorf("32-bit read at 8 = %#x, want %#x", got, 1|9000<<16)
	}
	if got := read(4, 8); !bytes.Equal(got, []byte{0x20, 0x30, 1, 0, 1, 0, 0x28, 0x23}) {
		t.Errorf("64-bit read at 4 = % x", got)
	}
	if got := read(12, 8); !bytes.Equal(got, make([]byte, 8)) {
		t.Errorf("read past mtu = % x, want zero", got)
	}
	g.mmio.Write(virtio.MMIOConfigSpace, []byte{0xff, 0xff, 0xff, 0xff})
	if got := read(0, 4); !bytes.Equal(got, testMAC[:4]) {
		t.Errorf("mac after a guest write = % x, want % x", got, testMAC[:4])
	}

	gen := vt.ReadReg(g.mmio, virtio.MMIOConfigGeneration)
	g.dev.SetLink(false)
	if got := binary.LittleEndian.Uint16(read(6, 2)); got != 0 {
		t.Errorf("status after SetLink(false) = %d, want 0", got)
	}
	if g.mmio.InterruptStatus()&virtio.InterruptConfigChange == 0 || vt.ReadReg(g.mmio, virtio.MMIOConfigGeneration) == gen {
		t.Errorf("SetLink(false) sent no configuration change notification")
	}
	g.dev.SetLink(true)
	if got := binary.LittleEndian.Uint16(read(6, 2)); got != netdev.StatusLinkUp {
		t.Errorf("status after SetLink(true) = %d, want %d", got, netdev.StatusLinkUp)
	}
}

func TestNoMAC(t *testing.T) {
	d, err := netdev.New(netdev.Config{Backend: nopBackend})
	if err != nil {
		t.Fatal(err)
	}
	if d.Features()&netdev.FeatureMAC != 0 {
		t.Errorf("Features() = %#x offers MAC without Config.MAC", d.Features())
	}
	b := make([]byte, 8)
	d.ReadConfig(0, b)
	if !bytes.Equal(b[:6], make([]byte, 6)) {
		t.Errorf("mac = % x, want zero", b[:6])
	}
}

func TestTx(t *testing.T) {
	f := ethFrame(100, 1)
	tests := []struct {
		name     string
		bufs     []vt.Buf
		want     []byte
		indirect bool // post through an indirect table
	}{
		{"one buffer", []vt.Buf{vt.Readable(concat(txHeader(), f))}, f, false},
		{"header and frame", []vt.Buf{vt.Readable(txHeader()), vt.Readable(f)}, f, false},
		{"split header", []vt.Buf{vt.Readable(txHeader()[:5]), vt.Readable(concat(txHeader()[5:], f[:3])), vt.Readable(f[3:])}, f, false},
		{"empty descriptors", []vt.Buf{vt.Readable(nil), vt.Readable(concat(txHeader(), f)), vt.Readable(nil)}, f, false},
		{"indirect", []vt.Buf{vt.Readable(txHeader()), vt.Readable(f)}, f, true},
		{"minimum frame", []vt.Buf{vt.Readable(concat(txHeader(), ethFrame(14, 2)))}, ethFrame(14, 2), false},
		{"maximum frame", []vt.Buf{vt.Readable(concat(txHeader(), ethFrame(1518, 3)))}, ethFrame(1518, 3), false},
		{"ignored flags and fields", []vt.Buf{vt.Readable(concat([]byte{netdev.HeaderDataValid, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, f))}, f, false},
		{"writable descriptor ignored", []vt.Buf{vt.Readable(concat(txHeader(), f)), vt.Writable(64)}, f, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuest(t, netdev.Config{})
			unlock := netdev.LockGuest(g.dev)
			if tc.indirect {
				g.tx.PostIndirect(tc.bufs...)
			} else {
				g.tx.Post(tc.bufs...)
			}
			unlock()
			vt.Kick(g.mmio, 1)
			if e := g.txUsed(); e.Len != 0 {
				t.Errorf("tx used length = %d, want 0", e.Len)
			}
			g.waitFor("the backend", func() bool { return g.be.count() == 1 })
			if got := g.be.frame(0); !bytes.Equal(got, tc.want) {
				t.Errorf("backend frame = % x, want % x", got, tc.want)
			}
			m := g.dev.Metrics()
			// The worker counts after WriteFrame returns.
			g.waitFor("TxPackets", func() bool { return m.TxPackets.Load() == 1 })
			if m.TxPackets.Load() != 1 || m.TxBytes.Load() != uint64(len(tc.want)) {
				t.Errorf("TxPackets %d TxBytes %d, want 1 %d", m.TxPackets.Load(), m.TxBytes.Load(), len(tc.want))
			}
		})
	}
}

// TestTxOrderAndOwnership sends many frames: the backend sees them in
// order, and keeps copies the guest cannot change afterwards.
func TestTxOrderAndOwnership(t *testing.T) {
	g := newGuest(t, netdev.Config{})
	const n = 40 // more than the queue: the guest reclaims as it goes
	var posted []vt.Posted
	for i := range n {
		g.waitFor("a free tx slot", func() bool {
			for {
				if _, ok := g.tx.PopUsed(); !ok {
					break
				}
			}
			return len(posted)-int(g.tx.UsedIdx()) < queueSize
		})
		posted = append(posted, g.sendTx(vt.Readable(concat(txHeader(), ethFrame(60+i, byte(i))))))
	}
	g.waitFor("the backend", func() bool { return g.be.count() == n })
	unlock := netdev.LockGuest(g.dev)
	for _, p := range posted {
		if err := g.mem.Write(p.Bufs[0].Addr, bytes.Repeat([]byte{0xee}, int(p.Bufs[0].Len))); err != nil {
			t.Fatal(err)
		}
	}
	unlock()
	for i := range n {
		if got, want := g.be.frame(i), ethFrame(60+i, byte(i)); !bytes.Equal(got, want) {
			t.Fatalf("frame %d = % x, want % x", i, got, want)
		}
	}
}

func TestTxDrops(t *testing.T) {
	csum := txHeader()
	csum[0] = netdev.HeaderNeedsCsum
	gso := txHeader()
	gso[1] = netdev.GSOTCPv4
	ecn := txHeader()
	ecn[1] = netdev.GSOECN
	tests := []struct {
		name    string
		bufs    []vt.Buf
		backend error
		counter func(*netdev.Metrics) uint64
	}{
		{"empty chain", []vt.Buf{vt.Readable(nil)}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsShort.Load() }},
		{"header only", []vt.Buf{vt.Readable(txHeader())}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsShort.Load() }},
		{"short header", []vt.Buf{vt.Readable(txHeader()[:11])}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsShort.Load() }},
		{"13-byte frame", []vt.Buf{vt.Readable(concat(txHeader(), ethFrame(14, 0)[:13]))}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsShort.Load() }},
		{"writable only", []vt.Buf{vt.Writable(100)}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsShort.Load() }},
		{"1519-byte frame", []vt.Buf{vt.Readable(concat(txHeader(), ethFrame(1519, 0)))}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsTooBig.Load() }},
		{"64 KiB frame", []vt.Buf{vt.Readable(txHeader()), vt.Readable(make([]byte, 64<<10))}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsTooBig.Load() }},
		{"needs csum", []vt.Buf{vt.Readable(concat(csum, ethFrame(60, 0)))}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsBadHeader.Load() }},
		{"gso tcpv4", []vt.Buf{vt.Readable(concat(gso, ethFrame(60, 0)))}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsBadHeader.Load() }},
		{"gso ecn", []vt.Buf{vt.Readable(concat(ecn, ethFrame(60, 0)))}, nil, func(m *netdev.Metrics) uint64 { return m.TxDropsBadHeader.Load() }},
		{"backend error", []vt.Buf{vt.Readable(concat(txHeader(), ethFrame(60, 0)))}, errors.New("full"), func(m *netdev.Metrics) uint64 { return m.TxDropsBackend.Load() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuest(t, netdev.Config{})
			g.be.setFail(tc.backend)
			g.sendTx(tc.bufs...)
			if e := g.txUsed(); e.Len != 0 {
				t.Errorf("tx used length = %d, want 0", e.Len)
			}
			m := g.dev.Metrics()
			g.waitFor("the drop to be counted", func() bool { return tc.counter(m) == 1 })
			// The device carries on: a good frame still goes through.
			g.be.setFail(nil)
			good := ethFrame(60, 9)
			g.sendTx(vt.Readable(concat(txHeader(), good)))
			g.waitFor("the backend", func() bool { return g.be.count() == 1 })
			if got := g.be.frame(0); !bytes.Equal(got, good) {
				t.Errorf("backend frame = % x, want % x", got, good)
			}
			g.waitFor("TxPackets", func() bool { return m.TxPackets.Load() == 1 })
		})
	}
}

func TestRx(t *testing.T) {
	f := ethFrame(200, 7)
	tests := []struct {
		name string
		bufs []vt.Buf
	}{
		{"one buffer", []vt.Buf{vt.Writable(1530)}},
		{"exact fit", []vt.Buf{vt.Writable(netdev.HeaderSize + 200)}},
		{"header and frame", []vt.Buf{vt.Writable(netdev.HeaderSize), vt.Writable(1518)}},
		{"split header", []vt.Buf{vt.Writable(5), vt.Writable(7), vt.Writable(50), vt.Writable(2000)}},
		{"readable descriptor ignored", []vt.Buf{vt.Readable([]byte("junk")), vt.Writable(1530)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuest(t, netdev.Config{})
			g.postRx(tc.bufs...)
			if err := g.dev.Deliver(f); err != nil {
				t.Fatalf("Deliver = %v", err)
			}
			r := g.recvRx()
			if r.used != uint32(netdev.HeaderSize+len(f)) {
				t.Errorf("used length = %d, want %d", r.used, netdev.HeaderSize+len(f))
			}
			if want := netdev.NewHeader(); !bytes.Equal(r.hdr, want) {
				t.Errorf("header = % x, want % x", []byte(r.hdr), []byte(want))
			}
			if r.hdr.NumBuffers() != 1 || r.hdr.Flags() != 0 || r.hdr.GSOType() != netdev.GSONone {
				t.Errorf("header %v: num_buffers %d flags %d gso %d, want 1 0 0", r.hdr, r.hdr.NumBuffers(), r.hdr.Flags(), r.hdr.GSOType())
			}
			if !bytes.Equal(r.frame, f) {
				t.Errorf("frame = % x, want % x", r.frame, f)
			}
			m := g.dev.Metrics()
			if m.RxPackets.Load() != 1 || m.RxBytes.Load() != uint64(len(f)) {
				t.Errorf("RxPackets %d RxBytes %d, want 1 %d", m.RxPackets.Load(), m.RxBytes.Load(), len(f))
			}
		})
	}
}

// TestRxCallerReusesBuffer checks that Deliver copies the frame.
func TestRxCallerReusesBuffer(t *testing.T) {
	g := newGuest(t, netdev.Config{})
	f := ethFrame(64, 1)
	want := bytes.Clone(f)
	if err := g.dev.Deliver(f); err != nil {
		t.Fatal(err)
	}
	clear(f)
	g.postRx(vt.Writable(1530))
	if r := g.recvRx(); !bytes.Equal(r.frame, want) {
		t.Errorf("frame = % x, want % x", r.frame, want)
	}
}

// TestRxBackpressure: with no guest buffers, host frames queue up to
// RxQueueLen and further ones are dropped and counted; each kick with new
// buffers resumes delivery in order.
func TestRxBackpressure(t *testing.T) {
	g := newGuest(t, netdev.Config{RxQueueLen: 4})
	m := g.dev.Metrics()
	for i := range 4 {
		if err := g.dev.Deliver(ethFrame(60, byte(i))); err != nil {
			t.Fatalf("Deliver(frame %d) = %v", i, err)
		}
	}
	if err := g.dev.Deliver(ethFrame(60, 99)); !errors.Is(err, netdev.ErrQueueFull) {
		t.Fatalf("Deliver on a full queue = %v, want ErrQueueFull", err)
	}
	if got := m.RxDropsQueueFull.Load(); got != 1 {
		t.Errorf("RxDropsQueueFull = %d, want 1", got)
	}
	if got := netdev.Queued(g.dev); got != 4 {
		t.Errorf("queued = %d, want 4", got)
	}
	next := 0
	for _, batch := range []int{1, 2, 1} {
		for range batch {
			g.postRx(vt.Writable(1530))
		}
		for range batch {
			r := g.recvRx()
			if want := ethFrame(60, byte(next)); !bytes.Equal(r.frame, want) {
				t.Fatalf("frame %d = % x, want % x", next, r.frame, want)
			}
			next++
		}
	}
	if got := netdev.Queued(g.dev); got != 0 {
		t.Errorf("queued = %d, want 0", got)
	}
	// Room again: a new frame goes straight to a posted buffer.
	g.postRx(vt.Writable(1530))
	if err := g.dev.Deliver(ethFrame(60, 50)); err != nil {
		t.Fatal(err)
	}
	if r := g.recvRx(); !bytes.Equal(r.frame, ethFrame(60, 50)) {
		t.Errorf("frame = % x", r.frame)
	}
	if m.RxPackets.Load() != 5 {
		t.Errorf("RxPackets = %d, want 5", m.RxPackets.Load())
	}
}

func TestRxSmallBuffer(t *testing.T) {
	g := newGuest(t, netdev.Config{})
	g.postRx(vt.Writable(10))                                  // not even a header
	g.postRx(vt.Writable(netdev.HeaderSize + 99))              // one byte short
	g.postRx(vt.Readable(make([]byte, 2000)))                  // nothing writable
	g.postRx(vt.Writable(6), vt.Writable(6), vt.Writable(100)) // fits exactly
	for i := range 4 {
		if err := g.dev.Deliver(ethFrame(100, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if r := g.recvRx(); r.used != 0 {
			t.Errorf("small chain %d used length = %d, want 0", i, r.used)
		}
	}
	r := g.recvRx()
	if want := ethFrame(100, 3); !bytes.Equal(r.frame, want) || r.used != netdev.HeaderSize+100 {
		t.Errorf("frame = % x (used %d), want % x", r.frame, r.used, want)
	}
	if got := g.dev.Metrics().RxDropsSmallBuffer.Load(); got != 3 {
		t.Errorf("RxDropsSmallBuffer = %d, want 3", got)
	}
}

func TestDeliverErrors(t *testing.T) {
	g := newGuestNoInit(t, netdev.Config{MTU: 100})
	m := g.dev.Metrics()
	for _, n := range []int{0, 13, 119} {
		if err := g.dev.Deliver(make([]byte, n)); !errors.Is(err, netdev.ErrFrameSize) {
			t.Errorf("Deliver(%d bytes) = %v, want ErrFrameSize", n, err)
		}
	}
	if got := m.RxDropsSize.Load(); got != 3 {
		t.Errorf("RxDropsSize = %d, want 3", got)
	}
	if err := g.dev.Deliver(make([]byte, 118)); !errors.Is(err, netdev.ErrNotActive) {
		t.Errorf("Deliver before activation = %v, want ErrNotActive", err)
	}
	g.init()
	for range 3 {
		if err := g.dev.Deliver(make([]byte, 118)); err != nil {
			t.Errorf("Deliver(118 bytes) after activation = %v", err)
		}
	}
	g.reset()
	if got := m.RxDropsNotActive.Load(); got != 4 {
		t.Errorf("RxDropsNotActive = %d after reset, want 4 (1 refused, 3 flushed)", got)
	}
	if err := g.dev.Deliver(make([]byte, 60)); !errors.Is(err, netdev.ErrNotActive) {
		t.Errorf("Deliver after reset = %v, want ErrNotActive", err)
	}
	g.dev.Close()
	if err := g.dev.Deliver(make([]byte, 60)); !errors.Is(err, netdev.ErrClosed) {
		t.Errorf("Deliver after Close = %v, want ErrClosed", err)
	}
	if err := g.dev.DeliverContext(context.Background(), make([]byte, 60)); !errors.Is(err, netdev.ErrClosed) {
		t.Errorf("DeliverContext after Close = %v, want ErrClosed", err)
	}
}

func TestDeliverContext(t *testing.T) {
	t.Run("waits for room", func(t *testing.T) {
		g := newGuest(t, netdev.Config{RxQueueLen: 1})
		if err := g.dev.Deliver(ethFrame(60, 1)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- g.dev.DeliverContext(context.Background(), ethFrame(60, 2)) }()
		g.postRx(vt.Writable(1530))
		g.postRx(vt.Writable(1530))
		for i := range 2 {
			if r := g.recvRx(); !bytes.Equal(r.frame, ethFrame(60, byte(i+1))) {
				t.Errorf("frame %d = % x", i, r.frame)
			}
		}
		if err := <-done; err != nil {
			t.Errorf("DeliverContext = %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		g := newGuest(t, netdev.Config{RxQueueLen: 1})
		if err := g.dev.Deliver(ethFrame(60, 1)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := g.dev.DeliverContext(ctx, ethFrame(60, 2)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("DeliverContext on a full queue = %v, want DeadlineExceeded", err)
		}
		if got := g.dev.Metrics().RxDropsQueueFull.Load(); got != 1 {
			t.Errorf("RxDropsQueueFull = %d, want 1", got)
		}
	})
	t.Run("reset while waiting", func(t *testing.T) {
		g := newGuest(t, netdev.Config{RxQueueLen: 1})
		if err := g.dev.Deliver(ethFrame(60, 1)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- g.dev.DeliverContext(context.Background(), ethFrame(60, 2)) }()
		g.reset()
		if err := <-done; !errors.Is(err, netdev.ErrNotActive) {
			t.Errorf("DeliverContext across a reset = %v, want ErrNotActive", err)
		}
	})
	t.Run("close while waiting", func(t *testing.T) {
		g := newGuest(t, netdev.Config{RxQueueLen: 1})
		if err := g.dev.Deliver(ethFrame(60, 1)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- g.dev.DeliverContext(context.Background(), ethFrame(60, 2)) }()
		g.dev.Close()
		if err := <-done; !errors.Is(err, netdev.ErrClosed) {
			t.Errorf("DeliverContext across Close = %v, want ErrClosed", err)
		}
	})
}

// TestResetJoinsWorker: a reset stops the worker, and the driver can
// activate the device again.
func TestResetJoinsWorker(t *testing.T) {
	before := leaktest.Count()
	g := newGuest(t, netdev.Config{})
	if n := leaktest.Settle(before+1, waitTimeout); n != before+1 {
		t.Fatalf("%d goroutines after activation, want %d", n, before+1)
	}
	g.reset()
	// wg.Done runs as the worker's last deferred call, so the goroutine
	// may linger an instant after Reset returns: settle, don't sample.
	if n := leaktest.Settle(before, waitTimeout); n != before {
		t.Fatalf("%d goroutines after reset, want %d:\n%s", n, before, leaktest.Stacks())
	}
	g.init()
	g.sendTx(vt.Readable(concat(txHeader(), ethFrame(60, 1))))
	g.waitFor("the backend", func() bool { return g.be.count() == 1 })
	g.postRx(vt.Writable(1530))
	if err := g.dev.Deliver(ethFrame(60, 2)); err != nil {
		t.Fatal(err)
	}
	if r := g.recvRx(); !bytes.Equal(r.frame, ethFrame(60, 2)) {
		t.Errorf("frame after re-activation = % x", r.frame)
	}
	g.dev.Close()
	if n := leaktest.Settle(before, waitTimeout); n != before {
		t.Fatalf("%d goroutines after Close, want %d:\n%s", n, before, leaktest.Stacks())
	}
	g.dev.Close() // idempotent
	if err := g.dev.Activate(g.mem, nil, nil, 0); err == nil {
		t.Errorf("Activate without queues succeeded")
	}
}

func TestActivateAfterClose(t *testing.T) {
	g := newGuestNoInit(t, netdev.Config{})
	g.dev.Close()
	g.rx = vt.NewDriver(t, g.mem, rxBase, queueSize, dataSize)
	g.tx = vt.NewDriver(t, g.mem, txBase, queueSize, dataSize)
	rxq, err := virtio.NewQueue(g.mem, g.rx.QueueConfig())
	if err != nil {
		t.Fatal(err)
	}
	txq, err := virtio.NewQueue(g.mem, g.tx.QueueConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.dev.Activate(g.mem, []*virtio.Queue{rxq, txq}, new(vt.Interrupt), 0); !errors.Is(err, netdev.ErrClosed) {
		t.Errorf("Activate after Close = %v, want ErrClosed", err)
	}
}

// TestHostile posts malformed chains and rings. Bad chains are returned
// unused and counted; a broken ring sets DEVICE_NEEDS_RESET; nothing
// panics, and a reset recovers.
func TestHostile(t *testing.T) {
	t.Run("bad tx chains", func(t *testing.T) {
		g := newGuest(t, netdev.Config{})
		unlock := netdev.LockGuest(g.dev)
		g.tx.SetDesc(0, vt.Desc{Addr: 0x1000, Len: 64, Flags: vt.FlagNext, Next: 200}) // next out of range
		g.tx.Publish(0)
		g.tx.SetDesc(1, vt.Desc{Addr: 0x1000, Len: 64, Flags: vt.FlagNext, Next: 2}) // loop
		g.tx.SetDesc(2, vt.Desc{Addr: 0x1000, Len: 64, Flags: vt.FlagNext, Next: 1})
		g.tx.Publish(1)
		g.tx.SetDesc(3, vt.Desc{Addr: ramSize - 16, Len: 0xffffffff}) // outside RAM
		g.tx.Publish(3)
		g.tx.SetDesc(4, vt.Desc{Addr: 0x1000, Len: 16, Flags: vt.FlagIndirect}) // indirect table of junk
		g.tx.Publish(4)
		g.tx.SetDesc(5, vt.Desc{Addr: 0, Len: ramSize}) // huge but valid: too big
		g.tx.Publish(5)
		unlock()
		vt.Kick(g.mmio, 1)
		for range 5 {
			if e := g.txUsed(); e.Len != 0 {
				t.Errorf("used length %d, want 0", e.Len)
			}
		}
		m := g.dev.Metrics()
		if m.BadChains.Load() < 3 || m.TxDropsTooBig.Load() != 1 {
			t.Errorf("BadChains %d TxDropsTooBig %d, want >= 3 and 1", m.BadChains.Load(), m.TxDropsTooBig.Load())
		}
		if st := g.status(); st&virtio.StatusDeviceNeedsReset != 0 {
			t.Errorf("status %#x: bad chains must not need a reset", st)
		}
		if g.be.count() != 0 {
			t.Errorf("backend got %d frames", g.be.count())
		}
	})
	for _, tc := range []struct {
		name  string
		queue int
		wreck func(g *guest)
	}{
		{"tx avail idx runs ahead", 1, func(g *guest) { g.tx.SetAvailIdx(queueSize + 1) }},
		{"tx head out of range", 1, func(g *guest) { g.tx.Publish(queueSize) }},
		{"rx head out of range", 0, func(g *guest) { g.rx.Publish(queueSize + 3) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuest(t, netdev.Config{})
			if tc.queue == 0 {
				if err := g.dev.Deliver(ethFrame(60, 1)); err != nil {
					t.Fatal(err)
				}
			}
			unlock := netdev.LockGuest(g.dev)
			tc.wreck(g)
			unlock()
			vt.Kick(g.mmio, tc.queue)
			deadline := time.Now().Add(waitTimeout)
			for g.status()&virtio.StatusDeviceNeedsReset == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("status %#x: no DEVICE_NEEDS_RESET", g.status())
				}
				time.Sleep(time.Millisecond)
			}
			if got := g.dev.Metrics().NeedsReset.Load(); got != 1 {
				t.Errorf("NeedsReset = %d, want 1", got)
			}
			g.waitFor("the rx path to close", func() bool { return netdev.Queued(g.dev) == 0 })
			if err := g.dev.Deliver(ethFrame(60, 2)); !errors.Is(err, netdev.ErrNotActive) {
				t.Errorf("Deliver on a broken device = %v, want ErrNotActive", err)
			}
			g.reset()
			g.init()
			g.sendTx(vt.Readable(concat(txHeader(), ethFrame(60, 3))))
			g.waitFor("the backend after a reset", func() bool { return g.be.count() == 1 })
		})
	}
	t.Run("rx kicks without frames", func(t *testing.T) {
		g := newGuest(t, netdev.Config{})
		for range queueSize {
			g.postRx(vt.Writable(1530))
		}
		for range 100 {
			vt.Kick(g.mmio, 0)
		}
		if idx := g.rxUsedIdx(); idx != 0 {
			t.Errorf("rx used idx = %d with no frames", idx)
		}
	})
}

func TestHeader(t *testing.T) {
	h := netdev.NewHeader()
	if len(h) != netdev.HeaderSize || h.NumBuffers() != 1 {
		t.Fatalf("NewHeader() = % x", []byte(h))
	}
	h.SetFlags(netdev.HeaderNeedsCsum)
	h.SetGSOType(netdev.GSOTCPv6 | netdev.GSOECN)
	h.SetHdrLen(0x0102)
	h.SetGSOSize(0x0304)
	h.SetCsumStart(0x0506)
	h.SetCsumOffset(0x0708)
	h.SetNumBuffers(0x090a)
	want := []byte{1, 0x84, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 9}
	if !bytes.Equal(h, want) {
		t.Errorf("header = % x, want % x", []byte(h), want)
	}
	if h.Flags() != 1 || h.GSOType() != 0x84 || h.HdrLen() != 0x0102 || h.GSOSize() != 0x0304 ||
		h.CsumStart() != 0x0506 || h.CsumOffset() != 0x0708 || h.NumBuffers() != 0x090a {
		t.Errorf("accessors disagree with % x", []byte(h))
	}
}
