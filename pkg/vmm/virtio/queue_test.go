// SPDX-License-Identifier: Apache-2.0

package virtio_test

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

const (
	ramSize   = 1 << 20
	queueBase = 0x1000
	testSize  = 8
)

// newQueue returns a driver and the device-side queue over fresh memory.
func newQueue(t testing.TB, size uint16, indirect, eventIdx bool) (*vt.Driver, *virtio.Queue, *memory.Memory) {
	t.Helper()
	mem := vt.NewMemory(t, 0, ramSize)
	d := vt.NewDriver(t, mem, queueBase, size, 0x10000)
	cfg := d.QueueConfig()
	cfg.Indirect, cfg.EventIdx = indirect, eventIdx
	q, err := virtio.NewQueue(mem, cfg)
	if err != nil {
		t.Fatalf("NewQueue(%v) = %v", d, err)
	}
	return d, q, mem
}

func TestPopHostile(t *testing.T) {
	const outside = ramSize + 0x1000
	tests := []struct {
		name     string
		indirect bool
		setup    func(d *vt.Driver)
		want     error // nil: a valid chain
		wantR    []uint32
		wantW    []uint32
		usable   bool // queue still usable after the error
	}{
		{
			name:  "readable and writable",
			setup: func(d *vt.Driver) { d.Post(vt.Readable([]byte("hdr")), vt.Readable([]byte("body")), vt.Writable(7)) },
			wantR: []uint32{3, 4}, wantW: []uint32{7},
		},
		{
			name: "zero length at bogus address",
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: math.MaxUint64, Len: 0, Flags: vt.FlagNext, Next: 1})
				d.SetDesc(1, vt.Desc{Addr: outside, Len: 0, Flags: vt.FlagWrite})
				d.Publish(0)
			},
			wantR: []uint32{0}, wantW: []uint32{0},
		},
		{
			name: "chain of exactly queue size",
			setup: func(d *vt.Driver) {
				bufs := make([]vt.Buf, testSize)
				for i := range bufs {
					bufs[i] = vt.Writable(1)
				}
				d.Post(bufs...)
			},
			wantW: []uint32{1, 1, 1, 1, 1, 1, 1, 1},
		},
		{
			name:     "indirect",
			indirect: true,
			setup:    func(d *vt.Driver) { d.PostIndirect(vt.Readable([]byte("ab")), vt.Writable(5), vt.Writable(6)) },
			wantR:    []uint32{2}, wantW: []uint32{5, 6},
		},
		{
			name:     "direct then indirect, WRITE on the indirect descriptor ignored",
			indirect: true,
			setup: func(d *vt.Driver) {
				buf := d.Alloc(16)
				tb := d.WriteIndirectTable(vt.Desc{Addr: uint64(buf), Len: 16, Flags: vt.FlagWrite})
				d.SetDesc(3, vt.Desc{Addr: uint64(buf), Len: 4, Flags: vt.FlagNext, Next: 5})
				d.SetDesc(5, vt.Desc{Addr: uint64(tb), Len: 16, Flags: vt.FlagIndirect | vt.FlagWrite})
				d.Publish(3)
			},
			wantR: []uint32{4}, wantW: []uint32{16},
		},
		{
			name:  "head out of range",
			setup: func(d *vt.Driver) { d.Publish(testSize) },
			want:  virtio.ErrQueueBroken,
		},
		{
			name:  "head far out of range",
			setup: func(d *vt.Driver) { d.Publish(0xffff) },
			want:  virtio.ErrQueueBroken,
		},
		{
			name:  "avail idx jumps past queue size",
			setup: func(d *vt.Driver) { d.Post(vt.Writable(1)); d.SetAvailIdx(testSize + 1) },
			want:  virtio.ErrQueueBroken,
		},
		{
			name:  "avail idx moves backwards",
			setup: func(d *vt.Driver) { d.SetAvailIdx(0xffff) },
			want:  virtio.ErrQueueBroken,
		},
		{
			name: "next out of range",
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagNext, Next: testSize})
				d.Publish(0)
			},
			want: virtio.ErrDescriptorIndex, usable: true,
		},
		{
			name: "loop of two",
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagNext, Next: 1})
				d.SetDesc(1, vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagNext, Next: 0})
				d.Publish(0)
			},
			want: virtio.ErrChainTooLong, usable: true,
		},
		{
			name: "self loop",
			setup: func(d *vt.Driver) {
				d.SetDesc(2, vt.Desc{Addr: 0x20000, Len: 0, Flags: vt.FlagNext, Next: 2})
				d.Publish(2)
			},
			want: virtio.ErrChainTooLong, usable: true,
		},
		{
			name: "buffer outside RAM",
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: outside, Len: 1})
				d.Publish(0)
			},
			want: virtio.ErrBufferRange, usable: true,
		},
		{
			name: "buffer crosses end of RAM",
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: ramSize - 4, Len: 8, Flags: vt.FlagWrite})
				d.Publish(0)
			},
			want: memory.ErrOutOfBounds, usable: true,
		},
		{
			name: "buffer address wraps",
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: math.MaxUint64 - 3, Len: 16})
				d.Publish(0)
			},
			want: virtio.ErrBufferRange, usable: true,
		},
		{
			name: "readable after writable",
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagWrite | vt.FlagNext, Next: 1})
				d.SetDesc(1, vt.Desc{Addr: 0x20000, Len: 1})
				d.Publish(0)
			},
			want: virtio.ErrDescriptorOrder, usable: true,
		},
		{
			name:  "indirect not negotiated",
			setup: func(d *vt.Driver) { d.PostIndirect(vt.Writable(1)) },
			want:  virtio.ErrIndirect, usable: true,
		},
		{
			name:     "indirect length not a multiple of 16",
			indirect: true,
			setup: func(d *vt.Driver) {
				tb := d.WriteIndirectTable(vt.Desc{Addr: 0x20000, Len: 1}, vt.Desc{})
				d.SetDesc(0, vt.Desc{Addr: uint64(tb), Len: 24, Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: virtio.ErrIndirect, usable: true,
		},
		{
			name:     "indirect empty table",
			indirect: true,
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: 0x20000, Len: 0, Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: virtio.ErrIndirect, usable: true,
		},
		{
			name:     "indirect table too large",
			indirect: true,
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: 0, Len: 16 * (virtio.MaxQueueSize + 1), Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: virtio.ErrIndirect, usable: true,
		},
		{
			name:     "indirect with NEXT",
			indirect: true,
			setup: func(d *vt.Driver) {
				tb := d.WriteIndirectTable(vt.Desc{Addr: 0x20000, Len: 1})
				d.SetDesc(0, vt.Desc{Addr: uint64(tb), Len: 16, Flags: vt.FlagIndirect | vt.FlagNext, Next: 1})
				d.SetDesc(1, vt.Desc{Addr: 0x20000, Len: 1})
				d.Publish(0)
			},
			want: virtio.ErrIndirect, usable: true,
		},
		{
			name:     "nested indirect",
			indirect: true,
			setup: func(d *vt.Driver) {
				inner := d.WriteIndirectTable(vt.Desc{Addr: 0x20000, Len: 1})
				outer := d.WriteIndirectTable(vt.Desc{Addr: uint64(inner), Len: 16, Flags: vt.FlagIndirect})
				d.SetDesc(0, vt.Desc{Addr: uint64(outer), Len: 16, Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: virtio.ErrIndirect, usable: true,
		},
		{
			name:     "indirect table outside RAM",
			indirect: true,
			setup: func(d *vt.Driver) {
				d.SetDesc(0, vt.Desc{Addr: ramSize - 16, Len: 32, Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: memory.ErrOutOfBounds, usable: true,
		},
		{
			name:     "indirect next out of table",
			indirect: true,
			setup: func(d *vt.Driver) {
				tb := d.WriteIndirectTable(vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagNext, Next: 2}, vt.Desc{})
				d.SetDesc(0, vt.Desc{Addr: uint64(tb), Len: 32, Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: virtio.ErrDescriptorIndex, usable: true,
		},
		{
			name:     "indirect loop",
			indirect: true,
			setup: func(d *vt.Driver) {
				tb := d.WriteIndirectTable(
					vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagNext, Next: 1},
					vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagNext, Next: 0})
				d.SetDesc(0, vt.Desc{Addr: uint64(tb), Len: 32, Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: virtio.ErrChainTooLong, usable: true,
		},
		{
			name:     "indirect buffer outside RAM",
			indirect: true,
			setup: func(d *vt.Driver) {
				tb := d.WriteIndirectTable(vt.Desc{Addr: outside, Len: 1, Flags: vt.FlagWrite})
				d.SetDesc(0, vt.Desc{Addr: uint64(tb), Len: 16, Flags: vt.FlagIndirect})
				d.Publish(0)
			},
			want: virtio.ErrBufferRange, usable: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, q, _ := newQueue(t, testSize, tt.indirect, false)
			tt.setup(d)
			c, err := q.Pop()
			if tt.want == nil {
				if err != nil || c == nil {
					t.Fatalf("Pop() = %v, %v; want a chain", c, err)
				}
				if got := lens(c.Readable()); !equalU32(got, tt.wantR) {
					t.Errorf("readable lengths: want %v, got %v", tt.wantR, got)
				}
				if got := lens(c.Writable()); !equalU32(got, tt.wantW) {
					t.Errorf("writable lengths: want %v, got %v", tt.wantW, got)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Pop() = %v, %v; want error %v", c, err, tt.want)
			}
			var qe *virtio.QueueError
			if !errors.As(err, &qe) {
				t.Fatalf("Pop() error %T is not a *QueueError", err)
			}
			broken := errors.Is(err, virtio.ErrQueueBroken)
			if broken == tt.usable || q.Broken() != broken {
				t.Fatalf("Pop() = %v: broken %v, Broken() %v, want usable %v", err, broken, q.Broken(), tt.usable)
			}
			if tt.usable {
				// The bad chain's head can be returned and the next
				// chain is served.
				if err := q.Push(qe.Head, 0); err != nil {
					t.Fatalf("Push(%d, 0) = %v", qe.Head, err)
				}
				p := d.Post(vt.Writable(3))
				c, err := q.Pop()
				if err != nil || c == nil || c.Head != p.Head {
					t.Fatalf("Pop() after bad chain = %v, %v; want head %d", c, err, p.Head)
				}
			} else if _, err := q.Pop(); !errors.Is(err, virtio.ErrQueueBroken) {
				t.Fatalf("second Pop() = %v, want ErrQueueBroken", err)
			}
		})
	}
}

func lens(bufs [][]byte) []uint32 {
	var out []uint32
	for _, b := range bufs {
		out = append(out, uint32(len(b)))
	}
	return out
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNewQueueInvalid(t *testing.T) {
	mem := vt.NewMemory(t, 0, 0x10000)
	tests := []struct {
		name string
		cfg  virtio.QueueConfig
	}{
		{"size zero", virtio.QueueConfig{Size: 0}},
		{"size not power of two", virtio.QueueConfig{Size: 3}},
		{"size too large", virtio.QueueConfig{Size: 0xffff}},
		{"desc misaligned", virtio.QueueConfig{Size: 4, DescTable: 8, AvailRing: 0x100, UsedRing: 0x200}},
		{"avail misaligned", virtio.QueueConfig{Size: 4, DescTable: 0, AvailRing: 0x101, UsedRing: 0x200}},
		{"used misaligned", virtio.QueueConfig{Size: 4, DescTable: 0, AvailRing: 0x100, UsedRing: 0x202}},
		{"desc outside", virtio.QueueConfig{Size: 4, DescTable: 0xfff0, AvailRing: 0x100, UsedRing: 0x200}},
		{"used outside", virtio.QueueConfig{Size: 4, DescTable: 0, AvailRing: 0x100, UsedRing: 0xfff0}},
		{"used wraps", virtio.QueueConfig{Size: 4, DescTable: 0, AvailRing: 0x100, UsedRing: math.MaxUint64 - 3}},
		{"max size outside", virtio.QueueConfig{Size: virtio.MaxQueueSize, DescTable: 0, AvailRing: 0x100, UsedRing: 0x200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := virtio.NewQueue(mem, tt.cfg); !errors.Is(err, virtio.ErrQueueConfig) {
				t.Fatalf("NewQueue(%+v) = %v, want ErrQueueConfig", tt.cfg, err)
			}
		})
	}
}

func TestPushAndWrap(t *testing.T) {
	d, q, _ := newQueue(t, 4, false, false)
	// Enough rounds to wrap the 16-bit ring indices.
	for i := 0; i < 70000; i++ {
		p := d.Post(vt.Readable([]byte{byte(i)}), vt.Writable(2))
		c, err := q.Pop()
		if err != nil || c == nil || c.Head != p.Head {
			t.Fatalf("round %d: Pop() = %v, %v; want head %d", i, c, err, p.Head)
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != byte(i) {
			t.Fatalf("round %d: read %v, %v", i, b, err)
		}
		if _, err := c.Write([]byte{0xaa, 0xbb}); err != nil {
			t.Fatal(err)
		}
		if err := q.Push(c.Head, c.Written()); err != nil {
			t.Fatalf("round %d: Push() = %v", i, err)
		}
		u, ok := d.PopUsed()
		if !ok || u.ID != uint32(p.Head) || u.Len != 2 {
			t.Fatalf("round %d: used = %+v, %v; want id %d len 2", i, u, ok, p.Head)
		}
		if got := d.Bytes(p.Bufs[1].Addr, 2); !bytes.Equal(got, []byte{0xaa, 0xbb}) {
			t.Fatalf("round %d: written %x", i, got)
		}
		d.ResetData()
	}
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("Pop() on empty queue = %v, %v; want nil, nil", c, err)
	}
	if err := q.Push(4, 0); err == nil {
		t.Fatalf("Push(4, 0) on size 4 = nil, want error")
	}
}

func TestChainReadWrite(t *testing.T) {
	d, q, _ := newQueue(t, testSize, true, false)
	p := d.PostIndirect(vt.Readable([]byte("hel")), vt.Readable(nil), vt.Readable([]byte("lo")),
		vt.Writable(2), vt.Writable(0), vt.Writable(3))
	c, err := q.Pop()
	if err != nil || c == nil {
		t.Fatalf("Pop() = %v, %v", c, err)
	}
	if c.ReadableLen() != 5 || c.WritableLen() != 5 || c.Remaining() != 5 {
		t.Fatalf("lengths = %d, %d, %d; want 5, 5, 5", c.ReadableLen(), c.WritableLen(), c.Remaining())
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadAll(chain) = %q, %v; want hello", got, err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after end = %d, %v; want 0, EOF", n, err)
	}
	if n, err := c.Write([]byte("wor")); n != 3 || err != nil {
		t.Fatalf("Write(wor) = %d, %v", n, err)
	}
	if n, err := c.Write([]byte("ld!")); n != 2 || !errors.Is(err, virtio.ErrChainFull) {
		t.Fatalf("Write(ld!) = %d, %v; want 2, ErrChainFull", n, err)
	}
	if c.Written() != 5 || c.Available() != 0 {
		t.Fatalf("Written() = %d, Available() = %d; want 5, 0", c.Written(), c.Available())
	}
	w := append(d.Bytes(p.Bufs[3].Addr, 2), d.Bytes(p.Bufs[5].Addr, 3)...)
	if string(w) != "world" {
		t.Fatalf("guest sees %q, want world", w)
	}
}

func TestNeedsInterruptFlags(t *testing.T) {
	d, q, _ := newQueue(t, testSize, false, false)
	if q.NeedsInterrupt() {
		t.Fatal("NeedsInterrupt() with nothing pushed = true")
	}
	d.Post(vt.Writable(1))
	c, _ := q.Pop()
	_ = q.Push(c.Head, 0)
	if !q.NeedsInterrupt() {
		t.Fatal("NeedsInterrupt() after Push = false")
	}
	if q.NeedsInterrupt() {
		t.Fatal("second NeedsInterrupt() = true")
	}
	d.SetAvailFlags(vt.AvailFlagNoInterrupt)
	d.Post(vt.Writable(1))
	c, _ = q.Pop()
	_ = q.Push(c.Head, 0)
	if q.NeedsInterrupt() {
		t.Fatal("NeedsInterrupt() with NO_INTERRUPT = true")
	}
}

func TestEventIdx(t *testing.T) {
	d, q, _ := newQueue(t, testSize, false, true)
	// An empty Pop publishes avail_event = last seen index.
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("Pop() = %v, %v", c, err)
	}
	if got := d.AvailEvent(); got != 0 {
		t.Fatalf("avail_event = %d, want 0", got)
	}
	for i := 0; i < 3; i++ {
		d.Post(vt.Writable(1))
	}
	d.SetUsedEvent(1) // interrupt once used idx passes 1, i.e. reaches 2
	for i := 0; i < 3; i++ {
		c, err := q.Pop()
		if err != nil || c == nil {
			t.Fatalf("Pop() = %v, %v", c, err)
		}
		if err := q.Push(c.Head, 0); err != nil {
			t.Fatal(err)
		}
		want := i == 1
		if got := q.NeedsInterrupt(); got != want {
			t.Fatalf("after push %d: NeedsInterrupt() = %v, want %v", i+1, got, want)
		}
	}
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("Pop() = %v, %v", c, err)
	}
	if got := d.AvailEvent(); got != 3 {
		t.Fatalf("avail_event = %d, want 3", got)
	}
	// Batched pushes crossing used_event notify once.
	d.Post(vt.Writable(1))
	d.Post(vt.Writable(1))
	d.SetUsedEvent(3)
	for i := 0; i < 2; i++ {
		c, _ := q.Pop()
		_ = q.Push(c.Head, 0)
	}
	if !q.NeedsInterrupt() {
		t.Fatal("NeedsInterrupt() after batch crossing used_event = false")
	}
}

func TestQueueErrorMessage(t *testing.T) {
	d, q, _ := newQueue(t, testSize, false, false)
	d.SetDesc(1, vt.Desc{Addr: 0x20000, Len: 1, Flags: vt.FlagNext, Next: 99})
	d.Publish(1)
	_, err := q.Pop()
	const want = "virtio: queue 0 head 1: virtio: descriptor index out of range: 99 >= 8"
	if err == nil || err.Error() != want {
		t.Fatalf("Pop() error = %v, want %q", err, want)
	}
	if q.Size() != testSize || q.Index() != 0 {
		t.Fatalf("Size(), Index() = %d, %d", q.Size(), q.Index())
	}
}
