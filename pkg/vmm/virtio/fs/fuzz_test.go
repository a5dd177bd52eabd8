// SPDX-License-Identifier: Apache-2.0

package fs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

const (
	// fuzzRAM is the guest RAM of FuzzChains: a request queue of
	// fuzzQueue descriptors at 0, then buffers.
	fuzzRAM   = 0x4000
	fuzzQueue = 8
)

// FuzzChains serves a request queue whose descriptor table, rings and
// request bytes are arbitrary, against a share beside a sentinel file.
// The device must not panic and nothing outside the share may change.
func FuzzChains(f *testing.F) {
	r := &rig{}
	seed := func(flags uint8, build func(d *vt.Driver)) {
		buf := make([]byte, fuzzRAM)
		mem, err := memory.NewFromBytes(memory.Mapping{Base: 0, Data: buf})
		if err != nil {
			f.Fatal(err)
		}
		build(vt.NewDriver(f, mem, 0, fuzzQueue, fuzzRAM-0x100))
		f.Add(buf, flags)
	}
	seed(0, func(d *vt.Driver) {
		d.Post(vt.Readable(r.fuseReq(opInit, 0, u32(7), u32(31), u32(0), u32(0))), vt.Writable(80))
		d.Post(vt.Readable(r.fuseReq(opLookup, fuse.RootID, []byte("file\x00"))), vt.Writable(144))
		d.Post(vt.Readable(r.fuseReq(opLookup, fuse.RootID, []byte("..\x00"))), vt.Writable(144))
	})
	seed(1, func(d *vt.Driver) {
		d.PostIndirect(vt.Readable(r.fuseReq(opInit, 0, u32(7), u32(31), u32(0), u32(0))), vt.Writable(16), vt.Writable(64))
		d.Post(vt.Readable(r.fuseReq(opOpen, 2, u32(2), u32(0))), vt.Writable(32))
		d.Post(vt.Readable(r.fuseReq(opRead, 2, u64(1), u64(0), u32(100), u32(0), u64(0), u32(0), u32(0))), vt.Writable(16), vt.Writable(100))
	})

	base := f.TempDir()
	share := filepath.Join(base, "share")
	sentinel := filepath.Join(base, "sentinel")
	os.WriteFile(sentinel, []byte("sentinel"), 0o644)
	f.Fuzz(func(t *testing.T, image []byte, flags uint8) {
		os.RemoveAll(share)
		os.Mkdir(share, 0o755)
		os.WriteFile(filepath.Join(share, "file"), []byte("data"), 0o644)
		os.Symlink("../sentinel", filepath.Join(share, "link"))
		dev, err := fs.New(fs.Config{Tag: "fuzz", Share: fuse.Config{Root: share, ReadOnly: flags&2 != 0}})
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
			Indirect: flags&1 != 0,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Activate(mem, []*virtio.Queue{nil, q}, new(vt.Interrupt), 0); err != nil {
			t.Fatal(err)
		}
		dev.QueueNotify(0)
		dev.QueueNotify(1)
		dev.QueueNotify(1)
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(sentinel); err != nil || !bytes.Equal(b, []byte("sentinel")) {
			t.Fatalf("sentinel changed: %q %v", b, err)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("%d entries beside the share", len(ents))
		}
	})
}
