// SPDX-License-Identifier: Apache-2.0

package fs_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

var le = binary.LittleEndian

const (
	ramSize   = 8 << 20
	queueSize = 16
	// Request queue at reqBase, hiprio queue at 0.
	reqBase = 1 << 20
)

// FUSE opcodes and sizes used here (include/uapi/linux/fuse.h).
const (
	opLookup  = 1
	opForget  = 2
	opGetattr = 3
	opOpen    = 14
	opRead    = 15
	opWrite   = 16
	opInit    = 26

	entryOutSize = 128
)

type rig struct {
	dev    *fs.Device
	mmio   *virtio.MMIO
	hiprio *vt.Driver
	req    *vt.Driver
	mem    *memory.Memory
	share  string
	unique uint64
}

func newRig(t *testing.T, cfg fs.Config) *rig {
	t.Helper()
	share := t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "hello"), []byte("hello from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg.Backend == nil {
		cfg.Share.Root = share
	}
	dev, err := fs.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { dev.Close() })
	mem := vt.NewMemory(t, 0, ramSize)
	m, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem})
	if err != nil {
		t.Fatalf("NewMMIO: %v", err)
	}
	hi := vt.NewDriver(t, mem, 0, queueSize, reqBase-0x1000)
	rq := vt.NewDriver(t, mem, reqBase, queueSize, ramSize-reqBase-0x1000)
	if err := vt.Init(m, vt.Handshake{Queues: []*vt.Driver{hi, rq}}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return &rig{dev: dev, mmio: m, hiprio: hi, req: rq, mem: mem, share: share}
}

// fuseReq builds a FUSE request with a correct header.
func (r *rig) fuseReq(op uint32, node uint64, body ...[]byte) []byte {
	r.unique++
	b := bytes.Join(body, nil)
	h := make([]byte, fuse.InHeaderSize)
	le.PutUint32(h[0:], uint32(fuse.InHeaderSize+len(b)))
	le.PutUint32(h[4:], op)
	le.PutUint64(h[8:], r.unique)
	le.PutUint64(h[16:], node)
	return append(h, b...)
}

// call posts bufs on d, kicks queue, and returns the used length and the
// concatenated writable buffers.
func (r *rig) call(t *testing.T, d *vt.Driver, queue int, bufs ...vt.Buf) (uint32, []byte) {
	t.Helper()
	p := d.Post(bufs...)
	vt.Kick(r.mmio, queue)
	u, ok := d.PopUsed()
	if !ok {
		t.Fatalf("no used element")
	}
	if u.ID != uint32(p.Head) {
		t.Fatalf("used id %d, head %d", u.ID, p.Head)
	}
	var out []byte
	for _, b := range p.Bufs {
		if b.Write {
			out = append(out, d.Bytes(b.Addr, b.Len)...)
		}
	}
	return u.Len, out
}

// reply checks a FUSE reply of used bytes in out and returns its errno and
// payload.
func (r *rig) reply(t *testing.T, used uint32, out []byte) (int32, []byte) {
	t.Helper()
	if used < fuse.OutHeaderSize || int(used) > len(out) {
		t.Fatalf("used length %d of %d", used, len(out))
	}
	if le.Uint32(out[0:]) != used || le.Uint64(out[8:]) != r.unique {
		t.Fatalf("reply header %x (used %d, unique %d)", out[:16], used, r.unique)
	}
	return -int32(le.Uint32(out[4:])), out[fuse.OutHeaderSize:used]
}

func u32(v uint32) []byte { return le.AppendUint32(nil, v) }
func u64(v uint64) []byte { return le.AppendUint64(nil, v) }

func (r *rig) init(t *testing.T) {
	t.Helper()
	req := r.fuseReq(opInit, 0, u32(7), u32(41), u32(128<<10), u32(1<<22|1<<13))
	used, out := r.call(t, r.req, 1, vt.Readable(req[:fuse.InHeaderSize]), vt.Readable(req[fuse.InHeaderSize:]),
		vt.Writable(fuse.OutHeaderSize), vt.Writable(64))
	e, p := r.reply(t, used, out)
	if e != 0 || len(p) != 64 || le.Uint32(p[0:]) != 7 || le.Uint32(p[4:]) != fuse.ProtoMinor {
		t.Fatalf("INIT: errno %d reply %x", e, p)
	}
	if le.Uint32(p[20:]) != fuse.MaxWrite {
		t.Errorf("max_write %d", le.Uint32(p[20:]))
	}
}

func (r *rig) lookup(t *testing.T, name string) (int32, uint64) {
	t.Helper()
	req := r.fuseReq(opLookup, fuse.RootID, append([]byte(name), 0))
	used, out := r.call(t, r.req, 1, vt.Readable(req), vt.Writable(fuse.OutHeaderSize+entryOutSize))
	e, p := r.reply(t, used, out)
	if e != 0 {
		return e, 0
	}
	if len(p) != entryOutSize {
		t.Fatalf("LOOKUP reply %d bytes", len(p))
	}
	return 0, le.Uint64(p)
}

func TestConfigSpace(t *testing.T) {
	r := newRig(t, fs.Config{Tag: "myshare", RequestQueues: 1})
	if got := vt.ReadReg(r.mmio, virtio.MMIODeviceID); got != 26 {
		t.Errorf("device id %d", got)
	}
	tag := make([]byte, fs.TagBytes)
	for i := range tag {
		var b [1]byte
		r.mmio.Read(virtio.MMIOConfigSpace+uint64(i), b[:])
		tag[i] = b[0]
	}
	if string(bytes.TrimRight(tag, "\x00")) != "myshare" {
		t.Errorf("tag %q", tag)
	}
	if got := vt.ReadReg(r.mmio, virtio.MMIOConfigSpace+36); got != 1 {
		t.Errorf("num_request_queues %d", got)
	}
	if got := vt.ReadReg(r.mmio, virtio.MMIOConfigSpace+40); got != 0 {
		t.Errorf("past the config space: %d", got)
	}
	vt.WriteReg(r.mmio, virtio.MMIOConfigSpace+36, 99)
	if got := vt.ReadReg(r.mmio, virtio.MMIOConfigSpace+36); got != 1 {
		t.Errorf("num_request_queues writable: %d", got)
	}
	if got := len(r.dev.QueueMaxSizes()); got != 2 {
		t.Errorf("%d queues", got)
	}
}

func TestNewConfig(t *testing.T) {
	root := t.TempDir()
	for _, cfg := range []fs.Config{
		{Share: fuse.Config{Root: root}},
		{Tag: string(make([]byte, 37)), Share: fuse.Config{Root: root}},
		{Tag: "a\x00b", Share: fuse.Config{Root: root}},
		{Tag: "t", RequestQueues: -1, Share: fuse.Config{Root: root}},
		{Tag: "t", RequestQueues: fs.MaxRequestQueues + 1, Share: fuse.Config{Root: root}},
		{Tag: "t"},
	} {
		if d, err := fs.New(cfg); err == nil {
			d.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	d, err := fs.New(fs.Config{Tag: "t", RequestQueues: 4, Share: fuse.Config{Root: root}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := len(d.QueueMaxSizes()); got != 5 {
		t.Errorf("%d queues, want 5", got)
	}
}

// TestInitLookupRead puts FUSE_INIT, LOOKUP, OPEN and READ through the
// request queue and FORGET through the hiprio queue.
func TestInitLookupRead(t *testing.T) {
	r := newRig(t, fs.Config{Tag: "share"})
	r.init(t)
	e, id := r.lookup(t, "hello")
	if e != 0 || id < 2 {
		t.Fatalf("LOOKUP hello: errno %d id %d", e, id)
	}
	if e, _ := r.lookup(t, "missing"); e != 2 {
		t.Errorf("LOOKUP missing: errno %d, want ENOENT", e)
	}
	if e, _ := r.lookup(t, ".."); e != 22 {
		t.Errorf("LOOKUP ..: errno %d, want EINVAL", e)
	}

	req := r.fuseReq(opOpen, id, u32(0), u32(0))
	e, p := r.do(t, req, 32)
	if e != 0 {
		t.Fatalf("OPEN: %d", e)
	}
	fh := le.Uint64(p)
	// READ into a header buffer and two data buffers, the split the guest
	// uses (header, then pages).
	req = r.fuseReq(opRead, id, u64(fh), u64(6), u32(4096), u32(0), u64(0), u32(0), u32(0))
	used, out := r.call(t, r.req, 1, vt.Readable(req), vt.Writable(fuse.OutHeaderSize), vt.Writable(5), vt.Writable(4096))
	e, p = r.reply(t, used, out)
	if e != 0 || string(p) != "from the host" {
		t.Errorf("READ: errno %d %q", e, p)
	}
	// A READ asking more than the writable space gets what fits.
	used, out = r.call(t, r.req, 1, vt.Readable(r.fuseReq(opRead, id, u64(fh), u64(0), u32(1<<20), u32(0), u64(0), u32(0), u32(0))),
		vt.Writable(fuse.OutHeaderSize+4))
	if e, p := r.reply(t, used, out); e != 0 || string(p) != "hell" {
		t.Errorf("short READ: errno %d %q", e, p)
	}

	// FORGET on the hiprio queue: no writable buffer, used length 0.
	used, _ = r.call(t, r.hiprio, 0, vt.Readable(r.fuseReq(opForget, id, u64(1))))
	if used != 0 {
		t.Errorf("FORGET used length %d", used)
	}
	getattr := r.fuseReq(opGetattr, id, u32(0), u32(0), u64(0))
	if e, _ := r.do(t, getattr, 200); e != 2 {
		t.Errorf("GETATTR after FORGET: errno %d, want ENOENT", e)
	}
	if n := r.dev.Metrics().Requests.Load(); n != 9 {
		t.Errorf("requests %d, want 9", n)
	}
}

// callOne posts a one-buffer request with one writable buffer of n bytes.
func (r *rig) callOne(t *testing.T, req []byte, n uint32) (uint32, []byte) {
	t.Helper()
	return r.call(t, r.req, 1, vt.Readable(req), vt.Writable(n))
}

// do posts req with n writable bytes and returns the reply's errno and
// payload.
func (r *rig) do(t *testing.T, req []byte, n uint32) (int32, []byte) {
	t.Helper()
	used, out := r.callOne(t, req, n)
	return r.reply(t, used, out)
}

// TestBadChains sends chains a driver would not: no writable space, a
// truncated header, an oversize request, a reply space smaller than the
// header, descriptors outside guest RAM.
func TestBadChains(t *testing.T) {
	r := newRig(t, fs.Config{Tag: "share"})
	r.init(t)
	lookup := r.fuseReq(opLookup, fuse.RootID, []byte("hello\x00"))
	if used, _ := r.call(t, r.req, 1, vt.Readable(lookup)); used != 0 {
		t.Errorf("no writable space: used %d", used)
	}
	if used, _ := r.call(t, r.req, 1, vt.Readable(lookup), vt.Writable(8)); used != 0 {
		t.Errorf("8 writable bytes: used %d", used)
	}
	if used, out := r.callOne(t, lookup[:20], 200); used != fuse.OutHeaderSize || int32(le.Uint32(out[4:])) != -22 {
		t.Errorf("truncated header: used %d %x", used, out[:16])
	}
	if used, _ := r.callOne(t, lookup[:10], 200); used != 0 {
		t.Errorf("10-byte request: used %d", used)
	}
	// An oversize request: the header claims all of it; only
	// MaxRequestSize is copied, so it is refused.
	big := make([]byte, fuse.MaxRequestSize+100)
	copy(big, r.fuseReq(opLookup, fuse.RootID, []byte("hello\x00")))
	le.PutUint32(big[0:], uint32(len(big)))
	if e, _ := r.do(t, big, 200); e != 22 {
		t.Errorf("oversize: errno %d", e)
	}
	if r.dev.Metrics().Oversize.Load() != 1 {
		t.Errorf("oversize not counted")
	}
	// A descriptor pointing outside guest RAM: the chain is returned
	// unused and counted.
	r.req.SetDesc(0, vt.Desc{Addr: ramSize + 4096, Len: 64})
	r.req.Publish(0)
	vt.Kick(r.mmio, 1)
	if u, ok := r.req.PopUsed(); !ok || u.Len != 0 {
		t.Errorf("bad chain: %+v %v", u, ok)
	}
	if r.dev.Metrics().BadChains.Load() != 1 {
		t.Errorf("bad chain not counted")
	}
	// Kicks of queues that do not exist are ignored.
	vt.Kick(r.mmio, 2)
	vt.Kick(r.mmio, 1000)
	// The device still works.
	if e, id := r.lookup(t, "hello"); e != 0 || id == 0 {
		t.Errorf("LOOKUP after bad chains: %d", e)
	}
}

// TestResetEndsSession checks that a driver reset drops the FUSE session
// and that Close releases every fd.
func TestResetEndsSession(t *testing.T) {
	before := countFDs(t)
	r := newRig(t, fs.Config{Tag: "share"})
	r.init(t)
	_, id := r.lookup(t, "hello")
	// The driver resets the device and starts again on fresh rings.
	vt.WriteReg(r.mmio, virtio.MMIOStatus, 0)
	r.hiprio = vt.NewDriver(t, r.mem, 2*reqBase, queueSize, reqBase-0x1000)
	r.req = vt.NewDriver(t, r.mem, 3*reqBase, queueSize, ramSize-3*reqBase-0x1000)
	if err := vt.Init(r.mmio, vt.Handshake{Queues: []*vt.Driver{r.hiprio, r.req}}); err != nil {
		t.Fatal(err)
	}
	getattr := r.fuseReq(opGetattr, fuse.RootID, u32(0), u32(0), u64(0))
	if e, _ := r.do(t, getattr, 200); e != 5 {
		t.Errorf("GETATTR before INIT after reset: errno %d, want EIO", e)
	}
	r.init(t)
	if e, _ := r.do(t, r.fuseReq(opGetattr, id, u32(0), u32(0), u64(0)), 200); e != 2 {
		t.Errorf("node from before the reset: errno %d, want ENOENT", e)
	}
	if err := r.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := r.dev.Activate(nil, make([]*virtio.Queue, 2), &vt.Interrupt{}, 0); !errors.Is(err, fs.ErrNoQueue) {
		t.Errorf("Activate without queues: %v", err)
	}
	if after := countFDs(t); after != before {
		t.Errorf("fds %d after Close, %d before New", after, before)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
