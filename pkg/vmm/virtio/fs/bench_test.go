// SPDX-License-Identifier: Apache-2.0

package fs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
	"golang.org/x/sys/unix"
)

const (
	benchIOSize   = 128 << 10
	benchFileSize = 64 << 20
)

// BenchmarkRead reads a file sequentially in 128 KiB READs through the
// whole device (descriptor chain, request copy, server, reply copy into
// guest memory), beside pread of the same bytes into the same guest
// buffer, so the ratio shows the device's and server's cost together.
// The host-side server alone is benchmarked in package fuse.
func BenchmarkRead(b *testing.B) {
	share := b.TempDir()
	data := make([]byte, benchFileSize)
	for i := range data {
		data[i] = byte(i)
	}
	if err := os.WriteFile(filepath.Join(share, "big"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	dev, err := fs.New(fs.Config{Tag: "bench", Share: fuse.Config{Root: share}})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	mem := vt.NewMemory(b, 0, ramSize)
	m, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem})
	if err != nil {
		b.Fatal(err)
	}
	hi := vt.NewDriver(b, mem, 0, queueSize, reqBase-0x1000)
	rq := vt.NewDriver(b, mem, reqBase, queueSize, ramSize-reqBase-0x1000)
	if err := vt.Init(m, vt.Handshake{Queues: []*vt.Driver{hi, rq}}); err != nil {
		b.Fatal(err)
	}
	r := &rig{dev: dev, mmio: m, hiprio: hi, req: rq, mem: mem}
	call := func(bufs ...vt.Buf) vt.Posted {
		p := rq.Post(bufs...)
		vt.Kick(m, 1)
		if _, ok := rq.PopUsed(); !ok {
			b.Fatal("no used element")
		}
		return p
	}
	call(vt.Readable(r.fuseReq(opInit, 0, u32(7), u32(31), u32(0), u32(0))), vt.Writable(80))
	rq.ResetData()
	p := call(vt.Readable(r.fuseReq(opLookup, fuse.RootID, []byte("big\x00"))), vt.Writable(16+entryOutSize))
	id := le.Uint64(rq.Bytes(p.Bufs[1].Addr, 16+8)[16:])
	rq.ResetData()
	p = call(vt.Readable(r.fuseReq(opOpen, id, u32(0), u32(0))), vt.Writable(32))
	fh := le.Uint64(rq.Bytes(p.Bufs[1].Addr, 24)[16:])

	b.Run("device", func(b *testing.B) {
		// One chain posted once and made available again each time, with
		// the offset rewritten in guest memory: the fake driver's own
		// cost stays out of the loop as far as it can.
		rq.ResetData()
		req := r.fuseReq(opRead, id, u64(fh), u64(0), u32(benchIOSize), u32(0), u64(0), u32(0), u32(0))
		p := rq.Post(vt.Readable(req), vt.Writable(16), vt.Writable(benchIOSize))
		vt.Kick(m, 1)
		rq.PopUsed()
		offAt := p.Bufs[0].Addr + fuse.InHeaderSize + 8
		b.SetBytes(benchIOSize)
		b.ResetTimer()
		for i := range b.N {
			if err := mem.PutUint64(offAt, uint64(i*benchIOSize%benchFileSize)); err != nil {
				b.Fatal(err)
			}
			rq.Publish(p.Head)
			vt.Kick(m, 1)
			u, ok := rq.PopUsed()
			if !ok || u.Len != 16+benchIOSize {
				b.Fatalf("used %+v %v", u, ok)
			}
		}
	})
	fd, err := unix.Open(filepath.Join(share, "big"), unix.O_RDONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		dst, err := mem.Slice(memory.GuestAddr(reqBase+0x10000), benchIOSize)
		if err != nil {
			b.Fatal(err)
		}
		for i := range b.N {
			if _, err := unix.Pread(fd, dst, int64(i*benchIOSize%benchFileSize)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWrite writes a file sequentially in 128 KiB WRITEs through the
// whole device, beside pwrite of the same guest buffer into a second file
// made alike.
func BenchmarkWrite(b *testing.B) {
	share := b.TempDir()
	for _, name := range []string{"big", "direct"} {
		if err := os.WriteFile(filepath.Join(share, name), make([]byte, benchFileSize), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	dev, err := fs.New(fs.Config{Tag: "bench", Share: fuse.Config{Root: share}})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	mem := vt.NewMemory(b, 0, ramSize)
	m, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem})
	if err != nil {
		b.Fatal(err)
	}
	hi := vt.NewDriver(b, mem, 0, queueSize, reqBase-0x1000)
	rq := vt.NewDriver(b, mem, reqBase, queueSize, ramSize-reqBase-0x1000)
	if err := vt.Init(m, vt.Handshake{Queues: []*vt.Driver{hi, rq}}); err != nil {
		b.Fatal(err)
	}
	r := &rig{dev: dev, mmio: m, hiprio: hi, req: rq, mem: mem}
	call := func(bufs ...vt.Buf) vt.Posted {
		p := rq.Post(bufs...)
		vt.Kick(m, 1)
		if _, ok := rq.PopUsed(); !ok {
			b.Fatal("no used element")
		}
		return p
	}
	call(vt.Readable(r.fuseReq(opInit, 0, u32(7), u32(31), u32(0), u32(0))), vt.Writable(80))
	p := call(vt.Readable(r.fuseReq(opLookup, fuse.RootID, []byte("big\x00"))), vt.Writable(16+entryOutSize))
	id := le.Uint64(rq.Bytes(p.Bufs[1].Addr, 16+8)[16:])
	p = call(vt.Readable(r.fuseReq(opOpen, id, u32(2), u32(0))), vt.Writable(32))
	fh := le.Uint64(rq.Bytes(p.Bufs[1].Addr, 24)[16:])
	rq.ResetData()
	req := r.fuseReq(opWrite, id, u64(fh), u64(0), u32(benchIOSize), u32(0), u64(0), u32(0), u32(0))
	le.PutUint32(req[0:], uint32(len(req)+benchIOSize)) // the header counts the payload
	data := make([]byte, benchIOSize)
	p = call(vt.Readable(req), vt.Readable(data), vt.Writable(16+8))
	offAt := p.Bufs[0].Addr + fuse.InHeaderSize + 8
	b.Run("device", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		for i := range b.N {
			if err := mem.PutUint64(offAt, uint64(i*benchIOSize%benchFileSize)); err != nil {
				b.Fatal(err)
			}
			rq.Publish(p.Head)
			vt.Kick(m, 1)
			if u, ok := rq.PopUsed(); !ok || u.Len != 16+8 {
				b.Fatalf("used %+v %v errno %d", u, ok, int32(le.Uint32(rq.Bytes(p.Bufs[2].Addr, 8)[4:])))
			}
		}
	})
	fd, err := unix.Open(filepath.Join(share, "direct"), unix.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	src, err := mem.Slice(p.Bufs[1].Addr, benchIOSize)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		for i := range b.N {
			if _, err := unix.Pwrite(fd, src, int64(i*benchIOSize%benchFileSize)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
