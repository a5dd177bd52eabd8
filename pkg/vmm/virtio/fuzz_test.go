// SPDX-License-Identifier: Apache-2.0

package virtio_test

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

// fuzzRAM is the guest RAM of FuzzChainWalk: the queue at 0, then buffers.
const fuzzRAM = 0x4000

// chainSeed lays out a queue of size 8 at 0 in fuzzRAM bytes of memory,
// lets build post chains, and returns the memory image.
func chainSeed(f *testing.F, build func(d *vt.Driver)) []byte {
	buf := make([]byte, fuzzRAM)
	mem, err := memory.NewFromBytes(memory.Mapping{Base: 0, Data: buf})
	if err != nil {
		f.Fatal(err)
	}
	build(vt.NewDriver(f, mem, 0, 8, fuzzRAM-0x200))
	return buf
}

// FuzzChainWalk pops, reads, writes and pushes every chain of a queue whose
// descriptor table, rings and buffers are arbitrary bytes. Walking must
// never panic, loop, or yield a buffer outside guest RAM.
func FuzzChainWalk(f *testing.F) {
	f.Add(chainSeed(f, func(d *vt.Driver) {
		d.Post(vt.Readable([]byte("head")), vt.Writable(16))
		d.Post(vt.Writable(1))
	}), uint8(3), uint8(0))
	f.Add(chainSeed(f, func(d *vt.Driver) {
		d.PostIndirect(vt.Readable([]byte("a")), vt.Readable(nil), vt.Writable(8))
		d.Post(vt.Readable([]byte("b")))
	}), uint8(3), uint8(1))
	f.Add(chainSeed(f, func(d *vt.Driver) {
		d.SetDesc(0, vt.Desc{Addr: 0x1000, Len: 4, Flags: vt.FlagNext, Next: 1})
		d.SetDesc(1, vt.Desc{Addr: 0x1000, Len: 4, Flags: vt.FlagNext, Next: 0})
		d.Publish(0)
		tb := d.WriteIndirectTable(vt.Desc{Addr: 0x1000, Len: 1, Flags: vt.FlagNext, Next: 0})
		d.SetDesc(2, vt.Desc{Addr: uint64(tb), Len: 16, Flags: vt.FlagIndirect})
		d.Publish(2)
		d.Publish(9)
	}), uint8(3), uint8(3))
	f.Add(make([]byte, 64), uint8(0), uint8(2))

	f.Fuzz(func(t *testing.T, image []byte, sizeLog, flags uint8) {
		buf := make([]byte, fuzzRAM)
		copy(buf, image)
		mem, err := memory.NewFromBytes(memory.Mapping{Base: 0, Data: buf})
		if err != nil {
			t.Fatal(err)
		}
		size := uint16(1) << (sizeLog % 9) // 1..256: the rings fit in fuzzRAM
		avail := memory.GuestAddr(16 * uint64(size))
		used := memory.GuestAddr((uint64(avail) + 6 + 2*uint64(size) + 3) &^ 3)
		q, err := virtio.NewQueue(mem, virtio.QueueConfig{
			Size: size, DescTable: 0, AvailRing: avail, UsedRing: used,
			Indirect: flags&1 != 0, EventIdx: flags&2 != 0,
		})
		if err != nil {
			t.Fatalf("NewQueue(size %d) = %v", size, err)
		}
		scratch := make([]byte, 256)
		// At most size+2 rounds: the avail index can only be up to size
		// ahead, but the device's used-ring writes may alias the ring.
		for i := 0; i <= int(size)+1; i++ {
			c, err := q.Pop()
			if err != nil {
				var qe *virtio.QueueError
				if !errors.As(err, &qe) {
					t.Fatalf("Pop() error %T %v is not a *QueueError", err, err)
				}
				if errors.Is(err, virtio.ErrQueueBroken) {
					return
				}
				if qe.Head >= size {
					t.Fatalf("chain error with head %d >= size %d", qe.Head, size)
				}
				_ = q.Push(qe.Head, 0)
				continue
			}
			if c == nil {
				return
			}
			if c.Head >= size {
				t.Fatalf("chain head %d >= size %d", c.Head, size)
			}
			if n := len(c.Readable()) + len(c.Writable()); n > int(size)+virtio.MaxQueueSize {
				t.Fatalf("chain of %d buffers", n)
			}
			n, err := io.CopyBuffer(io.Discard, c, scratch)
			if err != nil || uint64(n) != c.ReadableLen() {
				t.Fatalf("read %d of %d readable bytes: %v", n, c.ReadableLen(), err)
			}
			for c.Available() > 0 {
				if _, err := c.Write(scratch); err != nil && !errors.Is(err, virtio.ErrChainFull) {
					t.Fatal(err)
				}
			}
			if uint64(c.Written()) != min(c.WritableLen(), 1<<32-1) {
				t.Fatalf("Written() = %d, writable %d", c.Written(), c.WritableLen())
			}
			if err := q.Push(c.Head, c.Written()); err != nil {
				t.Fatalf("Push(%d) = %v", c.Head, err)
			}
			q.NeedsInterrupt()
		}
	})
}

// Register operations for FuzzMMIORegisters: 7 bytes each.
//
//	+0 op: bit 0 write, bits 1-2 width (1, 2, 4, 8 bytes), bit 3 config space
//	+1 offset u16 little-endian
//	+3 value u32 little-endian
const opSize = 7

// recorder records the register accesses of a Registers user as fuzz ops.
type recorder struct {
	r   vt.Registers
	ops []byte
}

func (rc *recorder) op(write bool, off uint64, data []byte) {
	var o [opSize]byte
	if write {
		o[0] = 1
	}
	o[0] |= 2 << 1 // 4 bytes
	binary.LittleEndian.PutUint16(o[1:], uint16(off))
	if write {
		copy(o[3:], data)
	}
	rc.ops = append(rc.ops, o[:]...)
}

func (rc *recorder) Read(off uint64, data []byte)  { rc.op(false, off, data); rc.r.Read(off, data) }
func (rc *recorder) Write(off uint64, data []byte) { rc.op(true, off, data); rc.r.Write(off, data) }

// FuzzMMIORegisters applies arbitrary register reads and writes to a
// transport over a small device, then posts and kicks. Nothing may panic,
// and an activated device must have negotiated valid features.
func FuzzMMIORegisters(f *testing.F) {
	// Seed: the full handshake, a posted chain and a kick.
	{
		mem := vt.NewMemory(f, 0, fuzzRAM)
		dev := &testDevice{}
		tr, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem})
		if err != nil {
			f.Fatal(err)
		}
		rc := &recorder{r: tr}
		d := vt.NewDriver(f, mem, 0x1000, 8, 0x1000)
		if err := vt.Init(rc, vt.Handshake{Queues: []*vt.Driver{d, nil}}); err != nil {
			f.Fatal(err)
		}
		vt.Kick(rc, 0)
		rc.Write(virtio.MMIOInterruptACK, []byte{3, 0, 0, 0})
		rc.Write(virtio.MMIOStatus, []byte{0, 0, 0, 0})
		f.Add(rc.ops, uint8(1))
	}
	f.Add([]byte{0x05, 0x70, 0x00, 0x01, 0, 0, 0, 0x0f, 0x00, 0x00, 0, 0, 0, 0}, uint8(0))

	f.Fuzz(func(t *testing.T, ops []byte, post uint8) {
		mem := vt.NewMemory(t, 0, fuzzRAM)
		dev := &testDevice{}
		tr, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem, Inject: func() {}})
		if err != nil {
			t.Fatal(err)
		}
		// The queue the seed handshake configures; posting into it lets
		// kicks reach the device's chain walk.
		d := vt.NewDriver(t, mem, 0x1000, 8, 0x1000)
		for i := 0; i < int(post%4); i++ {
			d.Post(vt.Readable([]byte{byte(i)}), vt.Writable(4))
		}
		offered := vt.DeviceFeatures(tr) // leaves DeviceFeaturesSel at 0, its reset value
		for len(ops) >= opSize {
			o := ops[:opSize]
			ops = ops[opSize:]
			width := 1 << ((o[0] >> 1) & 3)
			off := uint64(binary.LittleEndian.Uint16(o[1:]))
			if o[0]&8 != 0 {
				off = virtio.MMIOConfigSpace + off%0x100
			}
			data := make([]byte, width)
			copy(data, o[3:]) // the low bytes of the value; a 64-bit access gets zeros above
			if o[0]&1 != 0 {
				tr.Write(off, data)
			} else {
				tr.Read(off, data)
			}
			if dev.activations > 0 && dev.irq != nil {
				if dev.features&virtio.FeatureVersion1 == 0 || dev.features&^offered != 0 {
					t.Fatalf("device activated with features %#x", dev.features)
				}
			}
			st := tr.Status()
			if st&virtio.StatusDriverOK != 0 && st&virtio.StatusFeaturesOK == 0 {
				t.Fatalf("status %#x: DRIVER_OK without FEATURES_OK", st)
			}
		}
	})
}
