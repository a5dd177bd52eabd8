// SPDX-License-Identifier: Apache-2.0

package netdev_test

import (
	"errors"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/leaktest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/netdev"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

const (
	// fuzzRAM is the guest RAM of FuzzTx: the tx queue of fuzzQueue
	// descriptors at 0 and its buffers in the first fuzzImage bytes, which
	// the input fills, then an empty rx queue at fuzzRxBase.
	fuzzRAM    = 0x3000
	fuzzImage  = 0x2000
	fuzzRxBase = 0x2000
	fuzzQueue  = 8
	// fuzzMTU keeps the largest frame (fuzzMTU+18) well inside fuzzImage,
	// so that too-big frames are reachable.
	fuzzMTU = 200
)

// Fuzz flag bits: how the queues are set up.
const (
	fuzzIndirect = 1 << iota
	fuzzEventIdx
	fuzzBackendErr
)

// txSeed lays out the tx queue at 0 in fuzzImage bytes, lets build post
// chains, and returns the memory image.
func txSeed(f *testing.F, build func(d *vt.Driver)) []byte {
	buf := make([]byte, fuzzImage)
	mem, err := memory.NewFromBytes(memory.Mapping{Base: 0, Data: buf})
	if err != nil {
		f.Fatal(err)
	}
	build(vt.NewDriver(f, mem, 0, fuzzQueue, fuzzImage-0x200))
	return buf
}

// FuzzTx serves a tx queue whose descriptor table, rings and frame bytes
// are arbitrary. The device must never panic, must pass the backend only
// frames of 14 to MTU+18 bytes, must account for every frame it passes,
// and must leave no goroutine behind once closed.
func FuzzTx(f *testing.F) {
	hdr := func(flags, gso uint8) []byte {
		h := make([]byte, netdev.HeaderSize)
		h[0], h[1] = flags, gso
		return h
	}
	f.Add(txSeed(f, func(d *vt.Driver) {
		d.Post(vt.Readable(concat(hdr(0, 0), ethFrame(60, 1))))
		d.Post(vt.Readable(hdr(0, 0)), vt.Readable(ethFrame(100, 2)))
		d.Post(vt.Readable(hdr(0, 0)[:5]), vt.Readable(concat(hdr(0, 0)[5:], ethFrame(14, 3))))
	}), uint8(0))
	f.Add(txSeed(f, func(d *vt.Driver) {
		d.PostIndirect(vt.Readable(hdr(0, 0)), vt.Readable(ethFrame(fuzzMTU+18, 4)))
		d.PostIndirect(vt.Readable(hdr(0, 0)), vt.Readable(ethFrame(fuzzMTU+19, 5)))
		d.Post(vt.Readable(concat(hdr(netdev.HeaderNeedsCsum, 0), ethFrame(60, 6))))
	}), uint8(fuzzIndirect|fuzzEventIdx))
	f.Add(txSeed(f, func(d *vt.Driver) {
		d.Post(vt.Readable(concat(hdr(0, netdev.GSOTCPv4), ethFrame(60, 7))))
		d.Post(vt.Readable(hdr(0, 0)))
		d.Post(vt.Readable(nil))
		d.Post(vt.Writable(64))
		d.Post(vt.Readable(concat(hdr(0, 0), ethFrame(60, 8))), vt.Writable(16))
	}), uint8(fuzzEventIdx))
	f.Add(txSeed(f, func(d *vt.Driver) {
		d.Post(vt.Readable(concat(hdr(0, 0), ethFrame(60, 9))))
	}), uint8(fuzzBackendErr))
	f.Add(make([]byte, 64), uint8(0))

	f.Fuzz(func(t *testing.T, image []byte, flags uint8) {
		// A hang is a bug too: turn it into a crash the fuzzer records.
		watchdog := time.AfterFunc(10*time.Second, func() { panic("FuzzTx hung:\n" + leaktest.Stacks()) })
		defer watchdog.Stop()
		before := leaktest.Count()
		buf := make([]byte, fuzzRAM)
		copy(buf, image[:min(len(image), fuzzImage)])
		mem, err := memory.NewFromBytes(memory.Mapping{Base: 0, Data: buf})
		if err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		backend := netdev.BackendFunc(func(fr []byte) error {
			frames = append(frames, fr) // the worker calls it; read after Close
			if flags&fuzzBackendErr != 0 {
				return errFuzz
			}
			return nil
		})
		dev, err := netdev.New(netdev.Config{Backend: backend, MTU: fuzzMTU, QueueSize: fuzzQueue})
		if err != nil {
			t.Fatal(err)
		}
		// The layout of vt.NewDriver(mem, base, fuzzQueue, ...).
		queue := func(index int, base memory.GuestAddr) *virtio.Queue {
			avail := base + 16*fuzzQueue
			used := memory.GuestAddr((uint64(avail) + 6 + 2*fuzzQueue + 3) &^ 3)
			q, err := virtio.NewQueue(mem, virtio.QueueConfig{
				Index: index, Size: fuzzQueue, DescTable: base, AvailRing: avail, UsedRing: used,
				Indirect: flags&fuzzIndirect != 0, EventIdx: flags&fuzzEventIdx != 0,
			})
			if err != nil {
				t.Fatal(err)
			}
			return q
		}
		queues := []*virtio.Queue{queue(0, fuzzRxBase), queue(1, 0)}
		if err := dev.Activate(mem, queues, new(vt.Interrupt), 0); err != nil {
			t.Fatal(err)
		}
		dev.QueueNotify(1)
		// Close joins the worker, which runs at least one pass first.
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}
		for _, fr := range frames {
			if len(fr) < netdev.EthernetHeaderLen || len(fr) > fuzzMTU+18 {
				t.Errorf("backend got a %d-byte frame", len(fr))
			}
		}
		m := dev.Metrics()
		if got := m.TxPackets.Load() + m.TxDropsBackend.Load(); got != uint64(len(frames)) {
			t.Errorf("TxPackets+TxDropsBackend = %d, backend saw %d frames", got, len(frames))
		}
		if n := leaktest.Settle(before, waitTimeout); n > before {
			t.Fatalf("%d goroutines before, %d after", before, n)
		}
	})
}

// errFuzz is the backend error of fuzzBackendErr.
var errFuzz = errors.New("fuzz backend error")
