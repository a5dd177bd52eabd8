// SPDX-License-Identifier: Apache-2.0

package blk_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

const (
	// fuzzRAM is the guest RAM of FuzzRequest: a queue of fuzzQueue
	// descriptors at 0, then request buffers.
	fuzzRAM   = 0x2000
	fuzzQueue = 8
	// fuzzSectors is the image capacity; the image has fuzzTail more
	// bytes past it that must never change.
	fuzzSectors = 4
	fuzzTail    = 100
)

// Fuzz flag bits: how the device and queue are set up.
const (
	fuzzReadOnly = 1 << iota
	fuzzIndirect
	fuzzEventIdx
)

// requestSeed lays out a queue at 0 in fuzzRAM bytes of memory, lets build
// post requests, and returns the memory image.
func requestSeed(f *testing.F, build func(d *vt.Driver)) []byte {
	buf := make([]byte, fuzzRAM)
	mem, err := memory.NewFromBytes(memory.Mapping{Base: 0, Data: buf})
	if err != nil {
		f.Fatal(err)
	}
	build(vt.NewDriver(f, mem, 0, fuzzQueue, fuzzRAM-0x100))
	return buf
}

// FuzzRequest serves a queue whose descriptor table, rings and request
// bytes are arbitrary. The device must never panic, never change the image
// size or the bytes past its capacity, and never write a read-only image.
func FuzzRequest(f *testing.F) {
	h := func(typ blk.RequestType, sector uint64) vt.Buf { return vt.Readable(blk.NewHeader(typ, sector)) }
	f.Add(requestSeed(f, func(d *vt.Driver) {
		d.Post(h(blk.TypeIn, 1), vt.Writable(512), vt.Writable(1))
		d.Post(h(blk.TypeOut, 2), vt.Readable(make([]byte, 1024)), vt.Writable(1))
		d.Post(h(blk.TypeFlush, 0), vt.Writable(1))
	}), uint8(0))
	f.Add(requestSeed(f, func(d *vt.Driver) {
		d.Post(h(blk.TypeOut, 3), vt.Readable(bytes.Repeat([]byte{0xaa}, 512)), vt.Writable(1))
		d.Post(h(blk.TypeGetID, 0), vt.Writable(blk.IDBytes), vt.Writable(1))
	}), uint8(fuzzReadOnly))
	f.Add(requestSeed(f, func(d *vt.Driver) {
		d.PostIndirect(h(blk.TypeOut, fuzzSectors-1), vt.Readable(make([]byte, 512)), vt.Writable(1))
		d.PostIndirect(h(blk.TypeIn, fuzzSectors), vt.Writable(512), vt.Writable(1))
		d.Post(h(99, 0), vt.Writable(1))
	}), uint8(fuzzIndirect|fuzzEventIdx))
	f.Add(requestSeed(f, func(d *vt.Driver) {
		hd := blk.NewHeader(blk.TypeOut, 1<<55)
		d.Post(vt.Readable(hd[:7]), vt.Readable(hd[7:]), vt.Readable(make([]byte, 512)), vt.Writable(1))
		d.Post(h(blk.TypeOut, 0), vt.Readable(make([]byte, 100)), vt.Writable(1))
		d.Post(vt.Readable(make([]byte, 8)), vt.Writable(1))
		d.Post(h(blk.TypeIn, 0), vt.Writable(512))
	}), uint8(0))
	f.Add(make([]byte, 64), uint8(fuzzEventIdx))

	orig := pattern(fuzzSectors*blk.SectorSize + fuzzTail)
	path := filepath.Join(f.TempDir(), "disk.img")

	f.Fuzz(func(t *testing.T, image []byte, flags uint8) {
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		ro := flags&fuzzReadOnly != 0
		dev, err := blk.New(blk.Config{Path: path, ReadOnly: ro, ID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, fuzzRAM)
		copy(buf, image)
		mem, err := memory.NewFromBytes(memory.Mapping{Base: 0, Data: buf})
		if err != nil {
			t.Fatal(err)
		}
		// The layout of vt.NewDriver(mem, 0, fuzzQueue, ...).
		avail := memory.GuestAddr(16 * fuzzQueue)
		used := memory.GuestAddr((uint64(avail) + 6 + 2*fuzzQueue + 3) &^ 3)
		q, err := virtio.NewQueue(mem, virtio.QueueConfig{
			Size: fuzzQueue, DescTable: 0, AvailRing: avail, UsedRing: used,
			Indirect: flags&fuzzIndirect != 0, EventIdx: flags&fuzzEventIdx != 0,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Activate(mem, []*virtio.Queue{q}, new(vt.Interrupt), 0); err != nil {
			t.Fatal(err)
		}
		dev.QueueNotify(0)
		dev.QueueNotify(0)
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}

		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(orig) {
			t.Fatalf("image size %d, want %d", len(got), len(orig))
		}
		if tail := fuzzSectors * blk.SectorSize; !bytes.Equal(got[tail:], orig[tail:]) {
			t.Fatalf("bytes past the capacity changed")
		}
		if ro && !bytes.Equal(got, orig) {
			t.Fatalf("read-only image changed")
		}
	})
}
