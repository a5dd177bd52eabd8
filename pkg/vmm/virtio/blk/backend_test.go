// SPDX-License-Identifier: Apache-2.0

package blk_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/diskimage/qcow2"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

// memDisk is an in-memory Backend that records how it is used.
type memDisk struct {
	data          []byte
	writes, syncs int
	closed        bool
}

var _ blk.Backend = (*memDisk)(nil)

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) { return copy(p, m.data[off:]), nil }
func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	return copy(m.data[off:], p), nil
}
func (m *memDisk) Sync() error  { m.syncs++; return nil }
func (m *memDisk) Size() uint64 { return uint64(len(m.data)) }
func (m *memDisk) Close() error { m.closed = true; return nil }

// newBackendRig serves disk through the MMIO transport with a fake guest.
func newBackendRig(t *testing.T, cfg blk.Config) *rig {
	t.Helper()
	dev, err := blk.New(cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { dev.Close() })
	mem := vt.NewMemory(t, 0, ramSize)
	m, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem})
	if err != nil {
		t.Fatalf("NewMMIO() = %v", err)
	}
	drv := vt.NewDriver(t, mem, 0, queueSize, ramSize-0x1000)
	if err := vt.Init(m, vt.Handshake{Queues: []*vt.Driver{drv}}); err != nil {
		t.Fatalf("Init() = %v", err)
	}
	return &rig{dev: dev, mmio: m, drv: drv}
}

func TestBackend(t *testing.T) {
	for _, ro := range []bool{false, true} {
		disk := &memDisk{data: pattern(imageSectors*blk.SectorSize + 100)}
		r := newBackendRig(t, blk.Config{Backend: disk, ReadOnly: ro})
		if got := r.dev.Capacity(); got != imageSectors {
			t.Errorf("ro=%v: Capacity() = %d, want %d", ro, got, imageSectors)
		}
		res := r.submit(t, false, vt.Readable(hdr(blk.TypeIn, 2)), vt.Writable(1024), vt.Writable(1))
		if got := r.drv.Bytes(res.posted.Bufs[1].Addr, 1024); res.status != blk.StatusOK || !bytes.Equal(got, disk.data[1024:2048]) {
			t.Errorf("ro=%v: read: status %d, data equal %v", ro, res.status, bytes.Equal(got, disk.data[1024:2048]))
		}
		res = r.submit(t, false, vt.Readable(hdr(blk.TypeOut, 1)), vt.Readable(make([]byte, 512)), vt.Writable(1))
		r.submit(t, false, vt.Readable(hdr(blk.TypeFlush, 0)), vt.Writable(1))
		wantWrites, wantStatus := 1, blk.StatusOK
		if ro {
			wantWrites, wantStatus = 0, blk.StatusIOErr
		}
		if res.status != wantStatus || disk.writes != wantWrites || disk.syncs != wantWrites {
			t.Errorf("ro=%v: write status %d, backend writes %d syncs %d, want %d, %d, %d", ro, res.status, disk.writes, disk.syncs, wantStatus, wantWrites, wantWrites)
		}
		if err := r.dev.Close(); err != nil || !disk.closed {
			t.Errorf("ro=%v: Close() = %v, backend closed %v", ro, err, disk.closed)
		}
	}
	path := newImage(t, pattern(4096))
	for _, cfg := range []blk.Config{
		{Backend: &memDisk{}, Path: path},
		{Backend: &memDisk{}, File: os.Stdin},
	} {
		if _, err := blk.New(cfg); !errors.Is(err, blk.ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
		if cfg.Backend.(*memDisk).closed {
			t.Errorf("failed New closed the backend")
		}
	}
}

// TestQCOW2 serves a qcow2 image, with compressed and unallocated
// clusters, to the fake guest, and checks the image with qemu-img after
// the guest wrote to it.
func TestQCOW2(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	want := pattern(64 << 10)
	clear(want[16<<10 : 40<<10]) // left unallocated
	raw, path := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(raw, want, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4k", raw, path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(f, false)
	if err != nil {
		f.Close()
		t.Fatalf("qcow2.Open() = %v", err)
	}
	r := newBackendRig(t, blk.Config{Backend: img})
	const sectors = 64 << 10 / blk.SectorSize
	if got := r.dev.Capacity(); got != sectors {
		t.Fatalf("Capacity() = %d, want %d", got, sectors)
	}
	res := r.submit(t, true, vt.Readable(hdr(blk.TypeIn, 0)), vt.Writable(32<<10), vt.Writable(32<<10), vt.Writable(1))
	got := append(r.drv.Bytes(res.posted.Bufs[1].Addr, 32<<10), r.drv.Bytes(res.posted.Bufs[2].Addr, 32<<10)...)
	if res.status != blk.StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("read the disk: status %d, data equal %v", res.status, bytes.Equal(got, want))
	}
	// Into a compressed cluster, across into an unallocated one, and the
	// last sector.
	for _, w := range []struct{ sector, n uint64 }{{3, 2}, {30, 4}, {sectors - 1, 1}} {
		data := bytes.Repeat([]byte{byte(w.sector)}, int(w.n*blk.SectorSize))
		res := r.submit(t, false, vt.Readable(hdr(blk.TypeOut, w.sector)), vt.Readable(data), vt.Writable(1))
		if res.status != blk.StatusOK {
			t.Fatalf("write at sector %d: status %d", w.sector, res.status)
		}
		copy(want[w.sector*blk.SectorSize:], data)
	}
	if res := r.submit(t, false, vt.Readable(hdr(blk.TypeFlush, 0)), vt.Writable(1)); res.status != blk.StatusOK {
		t.Fatalf("flush: status %d", res.status)
	}
	if err := r.dev.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if out, err := exec.Command("qemu-img", "check", "-f", "qcow2", path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "out.raw")
	if msg, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, msg)
	}
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("image after the guest's writes differs (err %v)", err)
	}
}
