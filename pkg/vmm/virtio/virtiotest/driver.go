// SPDX-License-Identifier: Apache-2.0

package virtiotest

import (
	"fmt"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// Descriptor flags (virtio 1.2 §2.7.5), for building raw descriptors.
const (
	FlagNext     uint16 = 1 // VIRTQ_DESC_F_NEXT
	FlagWrite    uint16 = 2 // VIRTQ_DESC_F_WRITE
	FlagIndirect uint16 = 4 // VIRTQ_DESC_F_INDIRECT
)

// AvailFlagNoInterrupt is VIRTQ_AVAIL_F_NO_INTERRUPT (virtio 1.2 §2.7.6).
const AvailFlagNoInterrupt uint16 = 1

// Desc is a raw split-ring descriptor (struct virtq_desc, §2.7.5).
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Buf is one buffer of a chain to post.
type Buf struct {
	// Data is copied into guest memory for a readable buffer.
	Data []byte
	// Len is the length of a writable buffer; ignored for readable ones.
	Len uint32
	// Write makes the buffer device-writable.
	Write bool
}

// Readable returns a device-readable buffer holding data.
func Readable(data []byte) Buf { return Buf{Data: data} }

// Writable returns a device-writable buffer of n bytes.
func Writable(n uint32) Buf { return Buf{Len: n, Write: true} }

// PostedBuf is where a posted buffer landed in guest memory.
type PostedBuf struct {
	Addr  memory.GuestAddr
	Len   uint32
	Write bool
}

// Posted describes a chain made available by the driver.
type Posted struct {
	// Head is the head descriptor index, the id the device returns.
	Head uint16
	// Bufs are the chain's buffers in order.
	Bufs []PostedBuf
}

// UsedElem is one used ring entry (struct virtq_used_elem, §2.7.8).
type UsedElem struct {
	ID  uint32
	Len uint32
}

// Driver is the guest side of one split virtqueue in fake guest memory. It
// allocates descriptors round-robin and buffers from a bump allocator in a
// data area after the rings. Its methods fail the test on misuse.
type Driver struct {
	tb   testing.TB
	mem  *memory.Memory
	size uint16

	desc, avail, used memory.GuestAddr
	heapStart, heap   uint64
	heapEnd           uint64

	nextDesc uint16
	availIdx uint16
	lastUsed uint16
}

// NewDriver lays out a queue of size descriptors at base (16-byte aligned)
// in mem, followed by dataSize bytes for buffers and indirect tables:
//
//	base: descriptor table | avail ring | pad to 4 | used ring | pad to 16 | data
func NewDriver(tb testing.TB, mem *memory.Memory, base memory.GuestAddr, size uint16, dataSize uint64) *Driver {
	tb.Helper()
	n := uint64(size)
	d := &Driver{tb: tb, mem: mem, size: size, desc: base}
	d.avail = base + memory.GuestAddr(16*n)
	d.used = memory.GuestAddr(alignUp(uint64(d.avail)+6+2*n, 4))
	d.heapStart = alignUp(uint64(d.used)+6+8*n, 16)
	d.heap = d.heapStart
	d.heapEnd = d.heapStart + dataSize
	if _, err := mem.Slice(base, d.heapEnd-uint64(base)); err != nil {
		tb.Fatalf("virtiotest: NewDriver: queue and data area do not fit: %v", err)
	}
	return d
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// Size returns the queue size.
func (d *Driver) Size() uint16 { return d.size }

// DescTable returns the descriptor table address.
func (d *Driver) DescTable() memory.GuestAddr { return d.desc }

// AvailRing returns the available ring address.
func (d *Driver) AvailRing() memory.GuestAddr { return d.avail }

// UsedRing returns the used ring address.
func (d *Driver) UsedRing() memory.GuestAddr { return d.used }

// QueueConfig returns a configuration for virtio.NewQueue describing this
// queue, with Indirect and EventIdx off.
func (d *Driver) QueueConfig() virtio.QueueConfig {
	return virtio.QueueConfig{Size: d.size, DescTable: d.desc, AvailRing: d.avail, UsedRing: d.used}
}

// Alloc reserves n bytes (16-byte aligned) in the data area.
func (d *Driver) Alloc(n uint64) memory.GuestAddr {
	d.tb.Helper()
	a := alignUp(d.heap, 16)
	if a > d.heapEnd || n > d.heapEnd-a {
		d.tb.Fatalf("virtiotest: data area exhausted allocating %d bytes", n)
	}
	d.heap = a + n
	return memory.GuestAddr(a)
}

// ResetData frees every allocation in the data area.
func (d *Driver) ResetData() { d.heap = d.heapStart }

// SetDesc writes descriptor i of the descriptor table verbatim.
func (d *Driver) SetDesc(i uint16, desc Desc) {
	d.tb.Helper()
	d.writeDesc(d.desc+memory.GuestAddr(16*uint64(i)), desc)
}

func (d *Driver) writeDesc(at memory.GuestAddr, desc Desc) {
	d.tb.Helper()
	d.must(d.mem.PutUint64(at, desc.Addr))
	d.must(d.mem.PutUint32(at+8, desc.Len))
	d.must(d.mem.PutUint16(at+12, desc.Flags))
	d.must(d.mem.PutUint16(at+14, desc.Next))
}

func (d *Driver) must(err error) {
	d.tb.Helper()
	if err != nil {
		d.tb.Fatalf("virtiotest: %v", err)
	}
}

// Publish puts head in the next available ring slot and increments the
// available index, without checking head.
func (d *Driver) Publish(head uint16) {
	d.tb.Helper()
	slot := uint64(d.availIdx % d.size)
	d.must(d.mem.PutUint16(d.avail+4+memory.GuestAddr(2*slot), head))
	d.availIdx++
	d.must(d.mem.PutUint16(d.avail+2, d.availIdx))
}

// SetAvailIdx writes the available index verbatim.
func (d *Driver) SetAvailIdx(idx uint16) {
	d.tb.Helper()
	d.availIdx = idx
	d.must(d.mem.PutUint16(d.avail+2, idx))
}

// SetAvailFlags writes the available ring flags (AvailFlagNoInterrupt).
func (d *Driver) SetAvailFlags(flags uint16) {
	d.tb.Helper()
	d.must(d.mem.PutUint16(d.avail, flags))
}

// SetUsedEvent writes used_event, the used index after which the driver
// wants an interrupt with VIRTIO_F_EVENT_IDX (§2.7.10).
func (d *Driver) SetUsedEvent(v uint16) {
	d.tb.Helper()
	d.must(d.mem.PutUint16(d.avail+4+memory.GuestAddr(2*uint64(d.size)), v))
}

// AvailEvent reads avail_event, written by the device with
// VIRTIO_F_EVENT_IDX.
func (d *Driver) AvailEvent() uint16 {
	d.tb.Helper()
	v, err := d.mem.Uint16(d.used + 4 + memory.GuestAddr(8*uint64(d.size)))
	d.must(err)
	return v
}

// UsedIdx reads the device's used index.
func (d *Driver) UsedIdx() uint16 {
	d.tb.Helper()
	v, err := d.mem.Uint16(d.used + 2)
	d.must(err)
	return v
}

// PopUsed returns the next used ring entry the driver has not yet seen, or
// false if the device has not used any more buffers.
func (d *Driver) PopUsed() (UsedElem, bool) {
	d.tb.Helper()
	if d.UsedIdx() == d.lastUsed {
		return UsedElem{}, false
	}
	at := d.used + 4 + memory.GuestAddr(8*uint64(d.lastUsed%d.size))
	id, err := d.mem.Uint32(at)
	d.must(err)
	n, err := d.mem.Uint32(at + 4)
	d.must(err)
	d.lastUsed++
	return UsedElem{ID: id, Len: n}, true
}

// Bytes returns a copy of n bytes of guest memory at addr.
func (d *Driver) Bytes(addr memory.GuestAddr, n uint32) []byte {
	d.tb.Helper()
	b := make([]byte, n)
	d.must(d.mem.Read(addr, b))
	return b
}

// place allocates guest memory for bufs and copies readable data in.
func (d *Driver) place(bufs []Buf) []PostedBuf {
	d.tb.Helper()
	out := make([]PostedBuf, len(bufs))
	for i, b := range bufs {
		n := b.Len
		if !b.Write {
			n = uint32(len(b.Data))
		}
		addr := d.Alloc(uint64(n))
		if !b.Write {
			d.must(d.mem.Write(addr, b.Data))
		}
		out[i] = PostedBuf{Addr: addr, Len: n, Write: b.Write}
	}
	return out
}

func descFor(p PostedBuf) Desc {
	desc := Desc{Addr: uint64(p.Addr), Len: p.Len}
	if p.Write {
		desc.Flags |= FlagWrite
	}
	return desc
}

// Post places bufs in guest memory, chains len(bufs) descriptors taken
// round-robin from the table, and makes the chain available. It does not
// notify the device.
func (d *Driver) Post(bufs ...Buf) Posted {
	d.tb.Helper()
	if len(bufs) == 0 || len(bufs) > int(d.size) {
		d.tb.Fatalf("virtiotest: Post of %d buffers on a queue of %d", len(bufs), d.size)
	}
	placed := d.place(bufs)
	head := d.nextDesc
	for i, p := range placed {
		idx := (head + uint16(i)) % d.size
		desc := descFor(p)
		if i < len(placed)-1 {
			desc.Flags |= FlagNext
			desc.Next = (idx + 1) % d.size
		}
		d.SetDesc(idx, desc)
	}
	d.nextDesc = (head + uint16(len(bufs))) % d.size
	d.Publish(head)
	return Posted{Head: head, Bufs: placed}
}

// PostIndirect places bufs in guest memory behind an indirect descriptor
// table (§2.7.5.3) referenced by a single descriptor, and makes it available.
func (d *Driver) PostIndirect(bufs ...Buf) Posted {
	d.tb.Helper()
	if len(bufs) == 0 {
		d.tb.Fatalf("virtiotest: PostIndirect of no buffers")
	}
	placed := d.place(bufs)
	table := d.Alloc(16 * uint64(len(bufs)))
	for i, p := range placed {
		desc := descFor(p)
		if i < len(placed)-1 {
			desc.Flags |= FlagNext
			desc.Next = uint16(i + 1)
		}
		d.writeDesc(table+memory.GuestAddr(16*i), desc)
	}
	head := d.nextDesc
	d.SetDesc(head, Desc{Addr: uint64(table), Len: uint32(16 * len(bufs)), Flags: FlagIndirect})
	d.nextDesc = (head + 1) % d.size
	d.Publish(head)
	return Posted{Head: head, Bufs: placed}
}

// WriteIndirectTable writes descs as an indirect table in the data area and
// returns its address, for building malformed chains with SetDesc.
func (d *Driver) WriteIndirectTable(descs ...Desc) memory.GuestAddr {
	d.tb.Helper()
	table := d.Alloc(16 * uint64(len(descs)))
	for i, desc := range descs {
		d.writeDesc(table+memory.GuestAddr(16*i), desc)
	}
	return table
}

// String describes the layout, for failure messages.
func (d *Driver) String() string {
	return fmt.Sprintf("queue size %d desc %#x avail %#x used %#x", d.size, uint64(d.desc), uint64(d.avail), uint64(d.used))
}
