// SPDX-License-Identifier: Apache-2.0

package virtio

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
)

// Split virtqueue layout in guest memory (virtio 1.2 §2.7):
//
//	descriptor table, 16-byte aligned, Size entries of
//	  +0 addr u64 | +8 len u32 | +12 flags u16 | +14 next u16
//	available ring (driver area), 2-byte aligned
//	  +0 flags u16 | +2 idx u16 | +4 ring[Size] u16 | +4+2*Size used_event u16
//	used ring (device area), 4-byte aligned
//	  +0 flags u16 | +2 idx u16 | +4 ring[Size] {id u32, len u32} | +4+8*Size avail_event u16
//
// idx fields are free-running 16-bit counters; ring slots are idx mod Size.

// QueueConfig is the driver's configuration of one split virtqueue, as the
// transport collected it from the guest.
type QueueConfig struct {
	// Index is the queue's index within its device; it only labels errors.
	Index int
	// Size is the number of descriptors: a power of two from 1 to
	// MaxQueueSize. Zero is invalid.
	Size uint16
	// DescTable is the guest address of the descriptor table.
	DescTable memory.GuestAddr
	// AvailRing is the guest address of the available ring (driver area).
	AvailRing memory.GuestAddr
	// UsedRing is the guest address of the used ring (device area).
	UsedRing memory.GuestAddr
	// Indirect reports that VIRTIO_F_INDIRECT_DESC was negotiated; when
	// false an indirect descriptor is a guest fault.
	Indirect bool
	// EventIdx reports that VIRTIO_F_EVENT_IDX was negotiated; when false
	// the queue uses the ring flags for notification suppression.
	EventIdx bool
	// Metrics receives the queue's counters; nil means a private set.
	Metrics *Metrics
}

// Queue is the device side of one split virtqueue. All of its state that
// the guest can see lives in guest memory; it reads that memory as hostile.
// A Queue is not safe for concurrent use.
type Queue struct {
	cfg   QueueConfig
	mem   *memory.Memory
	desc  []byte // descriptor table, 16*Size bytes of guest RAM
	avail []byte // available ring, 6+2*Size bytes of guest RAM
	used  []byte // used ring, 6+8*Size bytes of guest RAM
	m     *Metrics

	lastAvail uint16 // next available-ring index to consume
	nextUsed  uint16 // used idx after the last Push
	signalled uint16 // nextUsed when NeedsInterrupt last ran
	broken    bool   // set on ErrQueueBroken; sticky until a new Queue
}

// NewQueue validates cfg against guest memory and returns the queue. The
// configuration comes from the guest: NewQueue checks that Size is a power of
// two no larger than MaxQueueSize, that each area has the alignment of
// §2.7 and lies inside one region of mem, and returns an error wrapping
// ErrQueueConfig otherwise.
func NewQueue(mem *memory.Memory, cfg QueueConfig) (*Queue, error) {
	n := uint64(cfg.Size)
	if n == 0 || n > MaxQueueSize || n&(n-1) != 0 {
		return nil, fmt.Errorf("%w: size %d", ErrQueueConfig, cfg.Size)
	}
	if cfg.DescTable%descAlign != 0 || cfg.AvailRing%availAlign != 0 || cfg.UsedRing%usedAlign != 0 {
		return nil, fmt.Errorf("%w: misaligned rings desc %#x avail %#x used %#x",
			ErrQueueConfig, uint64(cfg.DescTable), uint64(cfg.AvailRing), uint64(cfg.UsedRing))
	}
	q := &Queue{cfg: cfg, mem: mem, m: cfg.Metrics}
	if q.m == nil {
		q.m = new(Metrics)
	}
	var err error
	if q.desc, err = mem.Slice(cfg.DescTable, descSize*n); err != nil {
		return nil, fmt.Errorf("%w: descriptor table: %w", ErrQueueConfig, err)
	}
	if q.avail, err = mem.Slice(cfg.AvailRing, ringHeader+2*n+2); err != nil {
		return nil, fmt.Errorf("%w: available ring: %w", ErrQueueConfig, err)
	}
	if q.used, err = mem.Slice(cfg.UsedRing, ringHeader+usedElemSize*n+2); err != nil {
		return nil, fmt.Errorf("%w: used ring: %w", ErrQueueConfig, err)
	}
	return q, nil
}

// Size returns the queue size.
func (q *Queue) Size() uint16 { return q.cfg.Size }

// Index returns the queue's index within its device.
func (q *Queue) Index() int { return q.cfg.Index }

// Broken reports whether the queue met ErrQueueBroken.
func (q *Queue) Broken() bool { return q.broken }

// fenceWord is the target of fence.
var fenceWord atomic.Uint32

// fence orders this goroutine's accesses to guest memory before and after it
// with respect to the guest's vCPUs: a sequentially consistent atomic
// read-modify-write is a full barrier on every architecture Go supports
// (LOCK XADD on amd64, a DMB-bracketed sequence on arm64), and the compiler
// does not move memory accesses across it. The split ring protocol needs a
// full barrier around the idx fields (§2.7.13, §2.7.10).
func fence() { fenceWord.Add(1) }

// breakQueue marks the queue broken and returns the error for Pop.
func (q *Queue) breakQueue(head uint16, reason error) error {
	if !q.broken {
		q.broken = true
		q.m.QueueBroken.Add(1)
	}
	return &QueueError{Queue: q.cfg.Index, Head: head, Err: fmt.Errorf("%w: %w", ErrQueueBroken, reason)}
}

// availIdx reads the driver's available index.
func (q *Queue) availIdx() uint16 { return binary.LittleEndian.Uint16(q.avail[2:]) }

// setAvailEvent publishes avail_event, the available index after which the
// driver must notify the device (§2.7.10).
func (q *Queue) setAvailEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.used[ringHeader+usedElemSize*int(q.cfg.Size):], v)
}

// Pop takes the next available descriptor chain. It returns (nil, nil) when
// the driver has made nothing new available; a device drains the queue
// until then and waits for the next QueueNotify. With EVENT_IDX, finding the
// queue empty re-arms driver notifications (§2.7.10).
//
// Pop reads guest-controlled memory and checks: the avail index does not run
// more than Size ahead of the device, the head is below Size (both else the
// queue is broken: ErrQueueBroken, and every later Pop fails); for the chain,
// see [Chain]. A chain fault returns a *QueueError whose Head the device
// should return with Push(head, 0) or treat as fatal; the queue stays usable.
func (q *Queue) Pop() (*Chain, error) {
	if q.broken {
		return nil, &QueueError{Queue: q.cfg.Index, Err: ErrQueueBroken}
	}
	idx := q.availIdx()
	if idx == q.lastAvail && q.cfg.EventIdx {
		q.setAvailEvent(q.lastAvail)
		fence() // publish avail_event before re-reading idx, or a kick is lost
		idx = q.availIdx()
	}
	pending := idx - q.lastAvail // free-running counters: wraps correctly
	if pending == 0 {
		return nil, nil
	}
	if pending > q.cfg.Size {
		return nil, q.breakQueue(0, fmt.Errorf("avail idx %d is %d ahead of %d (size %d)", idx, pending, q.lastAvail, q.cfg.Size))
	}
	fence() // read ring entries and descriptors only after seeing idx
	slot := int(q.lastAvail % q.cfg.Size)
	head := binary.LittleEndian.Uint16(q.avail[ringHeader+2*slot:])
	if head >= q.cfg.Size {
		return nil, q.breakQueue(head, fmt.Errorf("head %d >= size %d", head, q.cfg.Size))
	}
	q.lastAvail++
	c, err := q.walk(head)
	if err != nil {
		q.m.BadChains.Add(1)
		return nil, &QueueError{Queue: q.cfg.Index, Head: head, Err: err}
	}
	q.m.ChainsPopped.Add(1)
	return c, nil
}

// walk follows the chain at head, which is below Size, and returns its
// buffers. Every descriptor is read exactly once into locals, so the guest
// changing the table meanwhile cannot make a checked value differ from a
// used one. Checks, all against guest input: next indices inside their
// table; at most one pass over the table's entries (a longer chain loops);
// indirect descriptors only when negotiated, without NEXT, not nested, with
// a non-empty length that is a multiple of 16 and at most MaxQueueSize
// entries, inside guest RAM; no readable descriptor after a writable one;
// every non-empty buffer inside one region of guest RAM.
func (q *Queue) walk(head uint16) (*Chain, error) {
	c := &Chain{Head: head}
	table := q.desc
	limit := uint32(q.cfg.Size) // entries in table
	inIndirect := false
	idx := uint32(head)
	seen := uint32(0)
	writable := false
	for {
		if idx >= limit {
			return nil, fmt.Errorf("%w: %d >= %d", ErrDescriptorIndex, idx, limit)
		}
		seen++
		if seen > limit {
			return nil, fmt.Errorf("%w: more than %d descriptors", ErrChainTooLong, limit)
		}
		d := table[descSize*idx : descSize*(idx+1)]
		addr := memory.GuestAddr(binary.LittleEndian.Uint64(d[0:]))
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])

		if flags&descFIndirect != 0 {
			switch {
			case !q.cfg.Indirect:
				return nil, fmt.Errorf("%w: not negotiated", ErrIndirect)
			case inIndirect:
				return nil, fmt.Errorf("%w: nested", ErrIndirect)
			case flags&descFNext != 0:
				return nil, fmt.Errorf("%w: with NEXT", ErrIndirect)
			case length == 0 || length%descSize != 0 || length/descSize > maxIndirectTb:
				return nil, fmt.Errorf("%w: table length %d", ErrIndirect, length)
			}
			tb, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return nil, fmt.Errorf("%w: indirect table: %w", ErrBufferRange, err)
			}
			// §2.7.5.3.2: the device ignores WRITE on the descriptor
			// that refers to the table, and the table starts at entry 0.
			table, limit, inIndirect, idx, seen = tb, length/descSize, true, 0, 0
			continue
		}

		isWrite := flags&descFWrite != 0
		if !isWrite && writable {
			return nil, ErrDescriptorOrder
		}
		writable = writable || isWrite
		var buf []byte
		if length > 0 {
			b, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return nil, fmt.Errorf("%w: descriptor %d: %w", ErrBufferRange, idx, err)
			}
			buf = b
		}
		if isWrite {
			c.writable = append(c.writable, buf)
			c.writableLen += uint64(length)
		} else {
			c.readable = append(c.readable, buf)
			c.readableLen += uint64(length)
		}
		if flags&descFNext == 0 {
			return c, nil
		}
		idx = uint32(next)
	}
}

// Push returns the chain at head to the driver through the used ring,
// recording that the device wrote written bytes into its writable buffers
// (§2.7.8: written must not exceed them; Chain.Written gives it). Call
// NeedsInterrupt afterwards to decide whether to notify. Push fails only on
// a device bug (head >= Size) or a broken queue.
func (q *Queue) Push(head uint16, written uint32) error {
	if q.broken {
		return &QueueError{Queue: q.cfg.Index, Head: head, Err: ErrQueueBroken}
	}
	if head >= q.cfg.Size {
		return &QueueError{Queue: q.cfg.Index, Head: head, Err: fmt.Errorf("%w: push head %d >= size %d", ErrDescriptorIndex, head, q.cfg.Size)}
	}
	slot := int(q.nextUsed % q.cfg.Size)
	e := q.used[ringHeader+usedElemSize*slot:]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	fence() // the element must be visible before the index that covers it
	q.nextUsed++
	binary.LittleEndian.PutUint16(q.used[2:], q.nextUsed)
	q.m.UsedPushed.Add(1)
	return nil
}

// NeedsInterrupt reports whether the driver wants a used buffer notification
// for the entries pushed since the previous call (§2.7.10): with EVENT_IDX,
// when the used index passed the driver's used_event; otherwise unless the
// driver set VIRTQ_AVAIL_F_NO_INTERRUPT. It returns false when nothing was
// pushed since the previous call.
func (q *Queue) NeedsInterrupt() bool {
	fence() // the used idx store must be visible before reading the driver's choice
	old, cur := q.signalled, q.nextUsed
	q.signalled = cur
	if old == cur {
		return false
	}
	if q.cfg.EventIdx {
		usedEvent := binary.LittleEndian.Uint16(q.avail[ringHeader+2*int(q.cfg.Size):])
		// vring_need_event from §2.7.10 / linux virtio_ring.h.
		return cur-usedEvent-1 < cur-old
	}
	return binary.LittleEndian.Uint16(q.avail[0:])&availFNoInterrupt == 0
}
