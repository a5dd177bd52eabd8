// SPDX-License-Identifier: Apache-2.0

package vsock_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
)

// guestCID is the CID the tests give the guest.
const guestCID = 3

// waitTimeout bounds every wait of the fake guest.
const waitTimeout = 5 * time.Second

// layout sizes the fake guest's queues and buffers.
type layout struct {
	queueSize uint16 // descriptors per queue
	rxBuf     uint32 // bytes per rx buffer, header included
	txBuf     uint32 // bytes per tx buffer
}

var defaultLayout = layout{queueSize: 64, rxBuf: vsock.HeaderSize + 4096, txBuf: vsock.HeaderSize + 64<<10}

// pkt is a packet the guest received.
type pkt struct {
	hdr     vsock.Header
	payload []byte
}

func (p pkt) String() string { return fmt.Sprintf("%v (%d payload bytes)", p.hdr, len(p.payload)) }

// guest plays a virtio-vsock driver over fake memory and a real MMIO
// transport: every queue descriptor i has its own fixed buffer.
type guest struct {
	tb   testing.TB
	lay  layout
	dev  *vsock.Device
	mmio *virtio.MMIO
	mem  *memory.Memory
	irq  chan struct{}

	rx, tx, ev     *vt.Driver
	rxBufs, txBufs []memory.GuestAddr
	txFree         []uint16
	repost         bool  // give rx buffers back as soon as they are parsed
	held           []int // rx descriptors parsed but not given back
	pending        []pkt
	bufAlloc       uint32 // buf_alloc the guest advertises
}

// newGuest builds a device with cfg (GuestCID defaults to guestCID), a
// transport and a fake guest, and runs the driver handshake. The device is
// closed at cleanup, which also checks for leaked goroutines.
func newGuest(tb testing.TB, cfg vsock.Config, lay layout) *guest {
	tb.Helper()
	if cfg.GuestCID == 0 {
		cfg.GuestCID = guestCID
	}
	dev, err := vsock.New(cfg)
	if err != nil {
		tb.Fatalf("New(%+v) = %v", cfg, err)
	}
	n := uint64(lay.queueSize)
	rxData := n*(uint64(lay.rxBuf)+16) + 64
	txData := n*(uint64(lay.txBuf)+16) + 64
	ring := 16*n + 6 + 2*n + 6 + 8*n + 64
	txBase := alignUp(ring+rxData, 4096)
	evBase := alignUp(txBase+ring+txData, 4096)
	size := alignUp(evBase+ring+4096, 4096)
	g := &guest{
		tb:       tb,
		lay:      lay,
		dev:      dev,
		mem:      vt.NewMemory(tb, 0, size),
		irq:      make(chan struct{}, 1),
		repost:   true,
		bufAlloc: 256 << 10,
	}
	g.mmio, err = virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: g.mem, Inject: g.inject})
	if err != nil {
		tb.Fatal(err)
	}
	g.rx = vt.NewDriver(tb, g.mem, 0, lay.queueSize, rxData)
	g.tx = vt.NewDriver(tb, g.mem, memory.GuestAddr(txBase), lay.queueSize, txData)
	g.ev = vt.NewDriver(tb, g.mem, memory.GuestAddr(evBase), lay.queueSize, 4096)
	for i := range lay.queueSize {
		g.rxBufs = append(g.rxBufs, g.rx.Alloc(uint64(lay.rxBuf)))
		g.txBufs = append(g.txBufs, g.tx.Alloc(uint64(lay.txBuf)))
		g.txFree = append(g.txFree, i)
	}
	tb.Cleanup(func() { g.dev.Close() })
	if err := vt.Init(g.mmio, vt.Handshake{Queues: []*vt.Driver{g.rx, g.tx, g.ev}}); err != nil {
		tb.Fatalf("Init: %v", err)
	}
	unlock := vsock.LockGuest(dev)
	for i := range lay.queueSize {
		g.rx.SetDesc(i, vt.Desc{Addr: uint64(g.rxBufs[i]), Len: lay.rxBuf, Flags: vt.FlagWrite})
		g.rx.Publish(i)
	}
	unlock()
	vt.Kick(g.mmio, 0)
	return g
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

func (g *guest) inject() {
	select {
	case g.irq <- struct{}{}:
	default:
	}
}

// wait blocks until an interrupt or a short poll interval passes, and
// fails the test after deadline.
func (g *guest) wait(deadline time.Time, what string) {
	g.tb.Helper()
	if time.Now().After(deadline) {
		g.tb.Fatalf("guest: timed out waiting for %s", what)
	}
	select {
	case <-g.irq:
	case <-time.After(10 * time.Millisecond):
	}
}

// reset writes 0 to the status register: the driver resets the device.
func (g *guest) reset() { vt.WriteReg(g.mmio, virtio.MMIOStatus, 0) }

// poll parses rx buffers the device used and reports whether it found any.
func (g *guest) poll() bool {
	g.tb.Helper()
	unlock := vsock.LockGuest(g.dev)
	found, reposted := false, false
	for {
		e, ok := g.rx.PopUsed()
		if !ok {
			break
		}
		found = true
		if e.ID >= uint32(len(g.rxBufs)) || e.Len > g.lay.rxBuf {
			unlock()
			g.tb.Fatalf("guest: bad used rx element %+v", e)
		}
		if e.Len < vsock.HeaderSize {
			g.pending = append(g.pending, pkt{hdr: nil})
		} else {
			b := g.rx.Bytes(g.rxBufs[e.ID], e.Len)
			g.pending = append(g.pending, pkt{hdr: vsock.Header(b[:vsock.HeaderSize]), payload: b[vsock.HeaderSize:]})
		}
		if g.repost {
			g.rx.Publish(uint16(e.ID))
			reposted = true
		} else {
			g.held = append(g.held, int(e.ID))
		}
	}
	unlock()
	if reposted {
		vt.Kick(g.mmio, 0)
	}
	return found
}

// giveBack reposts the rx buffers held since repost was turned off.
func (g *guest) giveBack() {
	unlock := vsock.LockGuest(g.dev)
	for _, id := range g.held {
		g.rx.Publish(uint16(id))
	}
	g.held = nil
	unlock()
	vt.Kick(g.mmio, 0)
}

// recv returns the next packet the device sent, failing after waitTimeout.
func (g *guest) recv() pkt {
	g.tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(g.pending) == 0 {
		if !g.poll() {
			g.wait(deadline, "an rx packet")
		}
	}
	p := g.pending[0]
	g.pending = g.pending[1:]
	if p.hdr == nil {
		g.tb.Fatalf("guest: device used an rx buffer with fewer than %d bytes", vsock.HeaderSize)
	}
	return p
}

// quiet checks that the device sends nothing for d.
func (g *guest) quiet(d time.Duration) {
	g.tb.Helper()
	time.Sleep(d)
	g.poll()
	if len(g.pending) > 0 {
		g.tb.Fatalf("guest: unexpected packet %v", g.pending[0])
	}
}

// sendRaw posts data as one tx chain, split into two descriptors at split
// when 0 < split < len(data), and kicks the tx queue.
func (g *guest) sendRaw(data []byte, split int) {
	g.tb.Helper()
	if uint32(len(data)) > g.lay.txBuf {
		g.tb.Fatalf("guest: %d bytes do not fit a tx buffer", len(data))
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		unlock := vsock.LockGuest(g.dev)
		g.reclaimTxLocked()
		if len(g.txFree) >= 2 {
			i := g.txFree[len(g.txFree)-1]
			j := g.txFree[len(g.txFree)-2]
			addr := g.txBufs[i]
			if err := g.mem.Write(addr, data); err != nil {
				g.tb.Fatal(err)
			}
			if split > 0 && split < len(data) {
				g.txFree = g.txFree[:len(g.txFree)-2]
				g.tx.SetDesc(i, vt.Desc{Addr: uint64(addr), Len: uint32(split), Flags: vt.FlagNext, Next: j})
				g.tx.SetDesc(j, vt.Desc{Addr: uint64(addr) + uint64(split), Len: uint32(len(data) - split)})
			} else {
				g.txFree = g.txFree[:len(g.txFree)-1]
				g.tx.SetDesc(i, vt.Desc{Addr: uint64(addr), Len: uint32(len(data))})
			}
			g.tx.Publish(i)
			unlock()
			vt.Kick(g.mmio, 1)
			return
		}
		unlock()
		g.wait(deadline, "a free tx descriptor")
	}
}

// reclaimTxLocked takes back tx chains the device used.
func (g *guest) reclaimTxLocked() {
	for {
		e, ok := g.tx.PopUsed()
		if !ok {
			return
		}
		g.txFree = append(g.txFree, uint16(e.ID))
		// A two-descriptor chain: its second descriptor follows NEXT.
		for id := uint16(e.ID); ; {
			b := g.tx.Bytes(g.tx.DescTable()+memory.GuestAddr(16*uint64(id)), 16)
			if b[12]&byte(vt.FlagNext) == 0 {
				break
			}
			id = uint16(b[14]) | uint16(b[15])<<8
			g.txFree = append(g.txFree, id)
		}
	}
}

// drainTx waits until the device has used every posted tx chain.
func (g *guest) drainTx() {
	g.tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		unlock := vsock.LockGuest(g.dev)
		g.reclaimTxLocked()
		free := len(g.txFree)
		unlock()
		if free == int(g.lay.queueSize) {
			return
		}
		g.wait(deadline, "the tx queue to drain")
	}
}

// header returns a guest-to-host header.
func (g *guest) header(op vsock.Op, gport, hport uint32) vsock.Header {
	h := vsock.NewHeader()
	h.SetSrcCID(guestCID)
	h.SetDstCID(vsock.HostCID)
	h.SetSrcPort(gport)
	h.SetDstPort(hport)
	h.SetType(vsock.TypeStream)
	h.SetOp(op)
	h.SetBufAlloc(g.bufAlloc)
	return h
}

// gconn is the guest's end of one connection.
type gconn struct {
	g            *guest
	gport, hport uint32
	fwdCnt       uint32 // bytes the guest consumed
	rxData       []byte // RW payload received and not yet taken
}

func (g *guest) conn(gport, hport uint32) *gconn { return &gconn{g: g, gport: gport, hport: hport} }

// send sends op with flags and payload on the connection.
func (c *gconn) send(op vsock.Op, flags uint32, payload []byte) {
	c.g.tb.Helper()
	h := c.g.header(op, c.gport, c.hport)
	h.SetFlags(flags)
	h.SetFwdCnt(c.fwdCnt)
	h.SetLen(uint32(len(payload)))
	c.g.sendRaw(append(h, payload...), 0)
}

// expect receives the next packet, which must belong to c and be op.
func (c *gconn) expect(op vsock.Op) pkt {
	c.g.tb.Helper()
	p := c.g.recv()
	c.check(p, op)
	return p
}

func (c *gconn) check(p pkt, op vsock.Op) {
	c.g.tb.Helper()
	h := p.hdr
	if h.Op() != op || h.SrcCID() != vsock.HostCID || h.DstCID() != guestCID ||
		h.SrcPort() != c.hport || h.DstPort() != c.gport || h.Type() != vsock.TypeStream ||
		int(h.Len()) != len(p.payload) {
		c.g.tb.Fatalf("guest: got %v, want %v %d:%d -> %d:%d", p, op, vsock.HostCID, c.hport, guestCID, c.gport)
	}
}

// read collects n bytes of RW payload, consuming them (fwd_cnt) as they
// arrive, and answers credit requests. Other packets fail the test.
func (c *gconn) read(n int) []byte {
	c.g.tb.Helper()
	for len(c.rxData) < n {
		p := c.g.recv()
		switch p.hdr.Op() {
		case vsock.OpRW:
			c.check(p, vsock.OpRW)
			c.rxData = append(c.rxData, p.payload...)
			c.fwdCnt += uint32(len(p.payload))
		case vsock.OpCreditRequest:
			c.check(p, vsock.OpCreditRequest)
			c.send(vsock.OpCreditUpdate, 0, nil)
		case vsock.OpCreditUpdate:
			c.check(p, vsock.OpCreditUpdate)
		default:
			c.g.tb.Fatalf("guest: reading %d bytes got %v", n, p)
		}
	}
	out := bytes.Clone(c.rxData[:n])
	c.rxData = c.rxData[n:]
	return out
}
