// SPDX-License-Identifier: Apache-2.0

package blk_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

const (
	ramSize   = 1 << 20
	queueSize = 16
	// imageSectors is the capacity of the default test image.
	imageSectors = 16
)

// pattern returns n bytes that differ from sector to sector and within one.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/blk.SectorSize)
	}
	return b
}

// newImage writes contents to a temporary file and returns its path.
func newImage(t *testing.T, contents []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, contents, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rig is a block device behind the MMIO transport with a fake guest.
type rig struct {
	dev  *blk.Device
	mmio *virtio.MMIO
	drv  *vt.Driver
	path string
	orig []byte // image contents at start
}

// newRig opens an image holding contents with cfg (Path is filled in) and
// runs the MMIO handshake acknowledging every offered feature.
func newRig(t *testing.T, cfg blk.Config, contents []byte) *rig {
	t.Helper()
	cfg.Path = newImage(t, contents)
	r := newBackendRig(t, cfg)
	r.path, r.orig = cfg.Path, bytes.Clone(contents)
	return r
}

func defaultRig(t *testing.T, cfg blk.Config) *rig {
	t.Helper()
	return newRig(t, cfg, pattern(imageSectors*blk.SectorSize))
}

// result is what the driver sees of one request.
type result struct {
	used   vt.UsedElem
	status blk.Status
	posted vt.Posted
}

// submit posts bufs (indirectly if indirect), kicks, and returns the used
// element and the last writable byte.
func (r *rig) submit(t *testing.T, indirect bool, bufs ...vt.Buf) result {
	t.Helper()
	var p vt.Posted
	if indirect {
		p = r.drv.PostIndirect(bufs...)
	} else {
		p = r.drv.Post(bufs...)
	}
	vt.Kick(r.mmio, 0)
	u, ok := r.drv.PopUsed()
	if !ok {
		t.Fatalf("no used element after kick")
	}
	if u.ID != uint32(p.Head) {
		t.Fatalf("used id = %d, want head %d", u.ID, p.Head)
	}
	res := result{used: u, posted: p, status: 0xff}
	for i := len(p.Bufs) - 1; i >= 0; i-- {
		if b := p.Bufs[i]; b.Write && b.Len > 0 {
			res.status = blk.Status(r.drv.Bytes(b.Addr, b.Len)[b.Len-1])
			break
		}
	}
	return res
}

// image returns the current contents of the image file.
func (r *rig) image(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *rig) checkUnchanged(t *testing.T) {
	t.Helper()
	if got := r.image(t); !bytes.Equal(got, r.orig) {
		t.Errorf("image changed (len %d, want %d)", len(got), len(r.orig))
	}
}

func hdr(typ blk.RequestType, sector uint64) []byte { return blk.NewHeader(typ, sector) }

func TestConfigSpace(t *testing.T) {
	for _, ro := range []bool{false, true} {
		r := newRig(t, blk.Config{ReadOnly: ro}, pattern(imageSectors*blk.SectorSize+100))
		var b [8]byte
		r.mmio.Read(virtio.MMIOConfigSpace+0, b[:])
		if got := binary.LittleEndian.Uint64(b[:]); got != imageSectors {
			t.Errorf("ro=%v: capacity = %d, want %d", ro, got, imageSectors)
		}
		if got := vt.ReadReg(r.mmio, virtio.MMIOConfigSpace+12); got != blk.SegMax {
			t.Errorf("ro=%v: seg_max = %d, want %d", ro, got, blk.SegMax)
		}
		if got := vt.ReadReg(r.mmio, virtio.MMIOConfigSpace+20); got != 512 {
			t.Errorf("ro=%v: blk_size = %d, want 512", ro, got)
		}
		if got := vt.ReadReg(r.mmio, virtio.MMIOConfigSpace+0x200); got != 0 {
			t.Errorf("ro=%v: config past the end = %d, want 0", ro, got)
		}
		vt.WriteReg(r.mmio, virtio.MMIOConfigSpace+0, 1) // ignored
		if got := vt.ReadReg(r.mmio, virtio.MMIOConfigSpace+0); got != imageSectors {
			t.Errorf("ro=%v: capacity after write = %d, want %d", ro, got, imageSectors)
		}
		f := vt.DeviceFeatures(r.mmio)
		want := blk.FeatureSegMax | blk.FeatureBlkSize | blk.FeatureFlush | virtio.QueueFeatures | virtio.FeatureVersion1
		if ro {
			want |= blk.FeatureRO
		}
		if f != want {
			t.Errorf("ro=%v: features = %#x, want %#x", ro, f, want)
		}
		if got := vt.ReadReg(r.mmio, virtio.MMIODeviceID); got != uint32(virtio.DeviceTypeBlock) {
			t.Errorf("device id = %d, want %d", got, virtio.DeviceTypeBlock)
		}
	}
}

func TestRead(t *testing.T) {
	img := pattern(imageSectors * blk.SectorSize)
	tests := []struct {
		name     string
		indirect bool
		sector   uint64
		bufs     []vt.Buf // after the header
		want     []byte
	}{
		{"one sector", false, 3, []vt.Buf{vt.Writable(512), vt.Writable(1)}, img[3*512 : 4*512]},
		{"two buffers", false, 0, []vt.Buf{vt.Writable(512), vt.Writable(1024), vt.Writable(1)}, img[:3*512]},
		{"status in data buffer", false, 5, []vt.Buf{vt.Writable(513)}, img[5*512 : 6*512]},
		{"status split", false, 5, []vt.Buf{vt.Writable(300), vt.Writable(213)}, img[5*512 : 6*512]},
		{"last sector", false, imageSectors - 1, []vt.Buf{vt.Writable(512), vt.Writable(1)}, img[len(img)-512:]},
		{"whole disk indirect", true, 0, []vt.Buf{vt.Writable(imageSectors * 512), vt.Writable(1)}, img},
		{"empty at capacity", false, imageSectors, []vt.Buf{vt.Writable(1)}, nil},
		{"empty descriptors", false, 1, []vt.Buf{vt.Writable(0), vt.Writable(512), vt.Writable(1), vt.Writable(0)}, img[512:1024]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := defaultRig(t, blk.Config{})
			res := r.submit(t, tt.indirect, append([]vt.Buf{vt.Readable(hdr(blk.TypeIn, tt.sector))}, tt.bufs...)...)
			if res.status != blk.StatusOK {
				t.Fatalf("status = %d, want OK", res.status)
			}
			if want := uint32(len(tt.want) + 1); res.used.Len != want {
				t.Errorf("used len = %d, want %d", res.used.Len, want)
			}
			var got []byte
			for _, b := range res.posted.Bufs[1:] {
				got = append(got, r.drv.Bytes(b.Addr, b.Len)...)
			}
			got = got[:len(got)-1] // the status byte
			if !bytes.Equal(got, tt.want) {
				t.Errorf("data differs from image[%d:]", tt.sector*512)
			}
			if m := r.dev.Metrics(); m.Reads.Load() != 1 || m.ReadBytes.Load() != uint64(len(tt.want)) {
				t.Errorf("Metrics() reads %d bytes %d, want 1 and %d", m.Reads.Load(), m.ReadBytes.Load(), len(tt.want))
			}
		})
	}
}

func TestWrite(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1024 bytes
	h := hdr(blk.TypeOut, 4)
	tests := []struct {
		name     string
		indirect bool
		bufs     []vt.Buf
	}{
		{"separate", false, []vt.Buf{vt.Readable(h), vt.Readable(data), vt.Writable(1)}},
		{"header and data together", false, []vt.Buf{vt.Readable(append(bytes.Clone(h), data...)), vt.Writable(1)}},
		{"header split", false, []vt.Buf{vt.Readable(h[:5]), vt.Readable(h[5:]), vt.Readable(data[:100]), vt.Readable(data[100:]), vt.Writable(1)}},
		{"header split into data", true, []vt.Buf{vt.Readable(h[:10]), vt.Readable(append(bytes.Clone(h[10:]), data...)), vt.Writable(1)}},
		{"larger status buffer", false, []vt.Buf{vt.Readable(h), vt.Readable(data), vt.Writable(8)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := defaultRig(t, blk.Config{})
			res := r.submit(t, tt.indirect, tt.bufs...)
			if res.status != blk.StatusOK || res.used.Len != 1 {
				t.Fatalf("status %d used len %d, want OK and 1", res.status, res.used.Len)
			}
			want := bytes.Clone(r.orig)
			copy(want[4*512:], data)
			if got := r.image(t); !bytes.Equal(got, want) {
				t.Errorf("image after write differs from want")
			}
			// Read it back through the device too.
			res = r.submit(t, false, vt.Readable(hdr(blk.TypeIn, 4)), vt.Writable(1024), vt.Writable(1))
			if got := r.drv.Bytes(res.posted.Bufs[1].Addr, 1024); res.status != blk.StatusOK || !bytes.Equal(got, data) {
				t.Errorf("read back: status %d, data equal %v", res.status, bytes.Equal(got, data))
			}
			if m := r.dev.Metrics(); m.Writes.Load() != 1 || m.WriteBytes.Load() != 1024 {
				t.Errorf("Metrics() writes %d bytes %d, want 1 and 1024", m.Writes.Load(), m.WriteBytes.Load())
			}
		})
	}
}

func TestFlush(t *testing.T) {
	for _, ro := range []bool{false, true} {
		r := defaultRig(t, blk.Config{ReadOnly: ro})
		res := r.submit(t, false, vt.Readable(hdr(blk.TypeFlush, 0)), vt.Writable(1))
		if res.status != blk.StatusOK || res.used.Len != 1 {
			t.Errorf("ro=%v: flush status %d used len %d, want OK and 1", ro, res.status, res.used.Len)
		}
		if got := r.dev.Metrics().Flushes.Load(); got != 1 {
			t.Errorf("ro=%v: Metrics().Flushes = %d, want 1", ro, got)
		}
	}
}

func TestGetID(t *testing.T) {
	tests := []struct {
		id   string
		bufs []vt.Buf
		want []byte
	}{
		{"serial-1", []vt.Buf{vt.Writable(blk.IDBytes), vt.Writable(1)}, append([]byte("serial-1"), make([]byte, 12)...)},
		{"abcdefghijklmnopqrst", []vt.Buf{vt.Writable(blk.IDBytes), vt.Writable(1)}, []byte("abcdefghijklmnopqrst")},
		{"", []vt.Buf{vt.Writable(blk.IDBytes + 1)}, make([]byte, 20)},
		{"short-buffer", []vt.Buf{vt.Writable(5), vt.Writable(1)}, []byte("short")},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			r := defaultRig(t, blk.Config{ID: tt.id})
			res := r.submit(t, false, append([]vt.Buf{vt.Readable(hdr(blk.TypeGetID, 0))}, tt.bufs...)...)
			if res.status != blk.StatusOK || res.used.Len != uint32(len(tt.want)+1) {
				t.Fatalf("status %d used len %d, want OK and %d", res.status, res.used.Len, len(tt.want)+1)
			}
			if got := r.drv.Bytes(res.posted.Bufs[1].Addr, uint32(len(tt.want))); !bytes.Equal(got, tt.want) {
				t.Errorf("id = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	r := defaultRig(t, blk.Config{ReadOnly: true})
	res := r.submit(t, false, vt.Readable(hdr(blk.TypeOut, 0)), vt.Readable(make([]byte, 512)), vt.Writable(1))
	if res.status != blk.StatusIOErr {
		t.Errorf("write to read-only disk: status %d, want IOERR", res.status)
	}
	r.checkUnchanged(t)
	if got := r.dev.Metrics().ReadOnlyRejects.Load(); got != 1 {
		t.Errorf("Metrics().ReadOnlyRejects = %d, want 1", got)
	}
	res = r.submit(t, false, vt.Readable(hdr(blk.TypeIn, 0)), vt.Writable(512), vt.Writable(1))
	if res.status != blk.StatusOK {
		t.Errorf("read from read-only disk: status %d, want OK", res.status)
	}
	if !r.dev.ReadOnly() {
		t.Errorf("ReadOnly() = false, want true")
	}
}

// TestHostile posts malformed requests; none may panic, touch the image, or
// stop the device from serving the valid request that follows.
func TestHostile(t *testing.T) {
	const capacity = imageSectors
	sector := func(typ blk.RequestType, s uint64, bufs ...vt.Buf) []vt.Buf {
		return append([]vt.Buf{vt.Readable(hdr(typ, s))}, bufs...)
	}
	w512 := vt.Readable(make([]byte, 512))
	tests := []struct {
		name    string
		bufs    []vt.Buf
		status  blk.Status // ignored when dropped
		dropped bool
	}{
		{"short header", []vt.Buf{vt.Readable(make([]byte, 8)), vt.Writable(1)}, blk.StatusIOErr, false},
		{"no header", []vt.Buf{vt.Writable(513)}, blk.StatusIOErr, false},
		{"header only", []vt.Buf{vt.Readable(hdr(blk.TypeIn, 0))}, 0, true},
		{"empty writable", sector(blk.TypeIn, 0, vt.Writable(0)), 0, true},
		{"read at capacity", sector(blk.TypeIn, capacity, vt.Writable(512), vt.Writable(1)), blk.StatusIOErr, false},
		{"read across the end", sector(blk.TypeIn, capacity-1, vt.Writable(1024), vt.Writable(1)), blk.StatusIOErr, false},
		{"read sector overflow", sector(blk.TypeIn, 1<<55, vt.Writable(512), vt.Writable(1)), blk.StatusIOErr, false},
		{"read max sector", sector(blk.TypeIn, math.MaxUint64, vt.Writable(512), vt.Writable(1)), blk.StatusIOErr, false},
		{"read partial sector", sector(blk.TypeIn, 0, vt.Writable(100), vt.Writable(1)), blk.StatusIOErr, false},
		{"write at capacity", sector(blk.TypeOut, capacity, w512, vt.Writable(1)), blk.StatusIOErr, false},
		{"write across the end", sector(blk.TypeOut, capacity-1, w512, w512, vt.Writable(1)), blk.StatusIOErr, false},
		{"write sector overflow", sector(blk.TypeOut, 1<<55, w512, vt.Writable(1)), blk.StatusIOErr, false},
		{"write wrapping to zero", sector(blk.TypeOut, math.MaxUint64-1<<55+1, w512, vt.Writable(1)), blk.StatusIOErr, false},
		{"write partial sector", sector(blk.TypeOut, 0, vt.Readable(make([]byte, 511)), vt.Writable(1)), blk.StatusIOErr, false},
		{"write without status", sector(blk.TypeOut, 0, w512), 0, true},
		{"unknown type", sector(99, 0, vt.Writable(1)), blk.StatusUnsupported, false},
		{"discard", sector(11, 0, vt.Writable(1)), blk.StatusUnsupported, false},
		{"write zeroes", sector(13, 0, vt.Writable(1)), blk.StatusUnsupported, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := defaultRig(t, blk.Config{})
			res := r.submit(t, false, tt.bufs...)
			if tt.dropped {
				if res.used.Len != 0 || r.dev.Metrics().Dropped.Load() != 1 {
					t.Errorf("used len %d dropped %d, want 0 and 1", res.used.Len, r.dev.Metrics().Dropped.Load())
				}
			} else if res.status != tt.status || res.used.Len != 1 {
				t.Errorf("status %d used len %d, want %d and 1", res.status, res.used.Len, tt.status)
			}
			r.checkUnchanged(t)
			if res := r.submit(t, false, vt.Readable(hdr(blk.TypeIn, 0)), vt.Writable(512), vt.Writable(1)); res.status != blk.StatusOK {
				t.Errorf("valid read afterwards: status %d, want OK", res.status)
			}
			if got := r.mmio.Status(); got&virtio.StatusDeviceNeedsReset != 0 {
				t.Errorf("Status() = %#x, want no NEEDS_RESET", got)
			}
		})
	}
}

// TestTailNotWritten checks that bytes after the last whole sector of an
// image are outside the disk.
func TestTailNotWritten(t *testing.T) {
	r := newRig(t, blk.Config{}, pattern(imageSectors*blk.SectorSize+100))
	if got := r.dev.Capacity(); got != imageSectors {
		t.Fatalf("Capacity() = %d, want %d", got, imageSectors)
	}
	res := r.submit(t, false, vt.Readable(hdr(blk.TypeOut, imageSectors-1)), vt.Readable(make([]byte, 1024)), vt.Writable(1))
	if res.status != blk.StatusIOErr {
		t.Errorf("write into the tail: status %d, want IOERR", res.status)
	}
	res = r.submit(t, false, vt.Readable(hdr(blk.TypeOut, imageSectors-1)), vt.Readable(make([]byte, 512)), vt.Writable(1))
	if res.status != blk.StatusOK {
		t.Errorf("write last sector: status %d, want OK", res.status)
	}
	got := r.image(t)
	if len(got) != len(r.orig) || !bytes.Equal(got[imageSectors*512:], r.orig[imageSectors*512:]) {
		t.Errorf("tail changed: len %d, want %d", len(got), len(r.orig))
	}
}

func TestBadChain(t *testing.T) {
	r := defaultRig(t, blk.Config{})
	buf := r.drv.Alloc(32)
	r.drv.SetDesc(0, vt.Desc{Addr: uint64(buf), Len: 1, Flags: vt.FlagWrite | vt.FlagNext, Next: 1})
	r.drv.SetDesc(1, vt.Desc{Addr: uint64(buf) + 16, Len: 16}) // readable after writable
	r.drv.Publish(0)
	vt.Kick(r.mmio, 0)
	if u, ok := r.drv.PopUsed(); !ok || u.ID != 0 || u.Len != 0 {
		t.Errorf("PopUsed() = %+v, %v, want {0 0}, true", u, ok)
	}
	if got := r.dev.Metrics().BadChains.Load(); got != 1 {
		t.Errorf("Metrics().BadChains = %d, want 1", got)
	}
}

func TestBrokenQueue(t *testing.T) {
	r := defaultRig(t, blk.Config{})
	r.drv.Publish(queueSize) // head outside the queue
	vt.Kick(r.mmio, 0)
	if got := r.mmio.Status(); got&virtio.StatusDeviceNeedsReset == 0 {
		t.Errorf("Status() = %#x, want NEEDS_RESET", got)
	}
	if got := r.dev.Metrics().QueueBroken.Load(); got != 1 {
		t.Errorf("Metrics().QueueBroken = %d, want 1", got)
	}
}

func TestNew(t *testing.T) {
	path := newImage(t, pattern(4096))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name string
		cfg  blk.Config
		want error // nil: success
	}{
		{"path", blk.Config{Path: path}, nil},
		{"file", blk.Config{File: f, ReadOnly: true}, nil},
		{"both", blk.Config{Path: path, File: f}, blk.ErrConfig},
		{"neither", blk.Config{}, blk.ErrConfig},
		{"long id", blk.Config{Path: path, ID: "abcdefghijklmnopqrstu"}, blk.ErrConfig},
		{"missing", blk.Config{Path: filepath.Join(t.TempDir(), "none")}, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := blk.New(tt.cfg)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("New() = %v, want success", err)
				}
				if got := d.Capacity(); got != 8 {
					t.Errorf("Capacity() = %d, want 8", got)
				}
				// File ownership passes to the device only on success;
				// the "file" case closes f here, which the deferred
				// Close then reports harmlessly.
				if err := d.Close(); err != nil {
					t.Errorf("Close() = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("New() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestClose(t *testing.T) {
	r := defaultRig(t, blk.Config{})
	r.drv.Post(vt.Readable(hdr(blk.TypeIn, 0)), vt.Writable(512), vt.Writable(1))
	if err := r.dev.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := r.dev.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	r.dev.QueueNotify(0) // closed: does nothing
	if _, ok := r.drv.PopUsed(); ok {
		t.Errorf("device served a request after Close")
	}
	q, err := virtio.NewQueue(vt.NewMemory(t, 0, 0x1000), virtio.QueueConfig{Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.dev.Activate(nil, []*virtio.Queue{q}, new(vt.Interrupt), 0); !errors.Is(err, blk.ErrClosed) {
		t.Errorf("Activate() after Close = %v, want ErrClosed", err)
	}
}

func TestResetStopsService(t *testing.T) {
	r := defaultRig(t, blk.Config{})
	r.drv.Post(vt.Readable(hdr(blk.TypeIn, 0)), vt.Writable(512), vt.Writable(1))
	r.dev.Reset()
	r.dev.QueueNotify(0)
	if _, ok := r.drv.PopUsed(); ok {
		t.Errorf("device served a request after Reset")
	}
	if err := r.dev.Activate(nil, nil, new(vt.Interrupt), 0); !errors.Is(err, blk.ErrNoQueue) {
		t.Errorf("Activate(no queues) = %v, want ErrNoQueue", err)
	}
}

// TestConcurrent runs notifies, resets, activations and a late Close from
// several goroutines; run with -race.
func TestConcurrent(t *testing.T) {
	path := newImage(t, pattern(imageSectors*blk.SectorSize))
	d, err := blk.New(blk.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mem := vt.NewMemory(t, 0, ramSize)
	drv := vt.NewDriver(t, mem, 0, queueSize, ramSize-0x1000)
	for i := range queueSize / 2 {
		drv.Post(vt.Readable(hdr(blk.TypeOut, uint64(i))), vt.Readable(pattern(512)), vt.Writable(1))
	}
	irq := new(vt.Interrupt)
	activate := func() {
		q, err := virtio.NewQueue(mem, drv.QueueConfig())
		if err != nil {
			t.Errorf("NewQueue() = %v", err)
			return
		}
		if err := d.Activate(mem, []*virtio.Queue{q}, irq, 0); err != nil && !errors.Is(err, blk.ErrClosed) {
			t.Errorf("Activate() = %v", err)
		}
	}
	activate()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				switch {
				case g == 0:
					d.Reset()
					activate()
				case g == 1 && i == 40:
					d.Close()
				default:
					d.QueueNotify(0)
				}
			}
		})
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
}
