// SPDX-License-Identifier: Apache-2.0

package p9_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/p9"
	vt "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/virtiotest"
)

var le = binary.LittleEndian

const (
	ramSize   = 8 << 20
	queueSize = 64
)

// 9P2000.L message types (Linux include/net/9p/9p.h).
const (
	tRlerror  = 7
	tTlopen   = 12
	tRlopen   = 13
	tTgetattr = 24
	tRgetattr = 25
	tTversion = 100
	tRversion = 101
	tTattach  = 104
	tRattach  = 105
	tTwalk    = 110
	tRwalk    = 111
	tTread    = 116
	tRread    = 117

	noTag = 0xffff
	noFID = 0xffffffff
)

type rig struct {
	dev  *p9.Device
	mmio *virtio.MMIO
	q    *vt.Driver
	mem  *memory.Memory
}

func newRig(t *testing.T) *rig {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte("hello from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev, err := p9.New(p9.Config{Tag: "p9", Root: root})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		settle()
		dev.Close()
	})
	mem := vt.NewMemory(t, 0, ramSize)
	m, err := virtio.NewMMIO(virtio.MMIOConfig{Device: dev, Memory: mem})
	if err != nil {
		t.Fatalf("NewMMIO: %v", err)
	}
	q := vt.NewDriver(t, mem, 0, queueSize, ramSize-0x1000)
	if err := vt.Init(m, vt.Handshake{Queues: []*vt.Driver{q}}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return &rig{dev: dev, mmio: m, q: q, mem: mem}
}

// settle gives p9's server time to start the receive goroutine it spawns
// after each message before the test ends the session: p9 v0.3.0 calls
// WaitGroup.Add in that goroutine, which the race detector reports when
// it runs concurrently with the Wait of a closing connection (see the
// package doc). A real guest never closes within microseconds of a
// request.
func settle() { time.Sleep(20 * time.Millisecond) }

// msg builds a 9P message: size[4] type[1] tag[2] body.
func msg(typ byte, tag uint16, body ...[]byte) []byte {
	b := make([]byte, 7)
	b[4] = typ
	le.PutUint16(b[5:], tag)
	for _, p := range body {
		b = append(b, p...)
	}
	le.PutUint32(b, uint32(len(b)))
	return b
}

func u16(v uint16) []byte { return le.AppendUint16(nil, v) }
func u32(v uint32) []byte { return le.AppendUint32(nil, v) }
func u64(v uint64) []byte { return le.AppendUint64(nil, v) }
func str(s string) []byte { return append(u16(uint16(len(s))), s...) }

// waitUsed waits for the device to complete a chain; replies come from
// the session's reader goroutine, not from the kick.
func (r *rig) waitUsed(t *testing.T) vt.UsedElem {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		unlock := p9.LockGuest(r.dev)
		u, ok := r.q.PopUsed()
		unlock()
		if ok {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("no used element after 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// replyOf returns the bytes the device wrote into p's writable buffers.
func (r *rig) replyOf(p vt.Posted, n uint32) []byte {
	defer p9.LockGuest(r.dev)()
	var out []byte
	for _, b := range p.Bufs {
		if b.Write {
			out = append(out, r.q.Bytes(b.Addr, b.Len)...)
		}
	}
	return out[:min(int(n), len(out))]
}

// call posts req with writable bytes of room, kicks, and returns the reply.
func (r *rig) call(t *testing.T, req []byte, writable ...uint32) []byte {
	t.Helper()
	bufs := []vt.Buf{vt.Readable(req)}
	for _, w := range writable {
		bufs = append(bufs, vt.Writable(w))
	}
	p := r.post(bufs...)
	vt.Kick(r.mmio, 0)
	u := r.waitUsed(t)
	if u.ID != uint32(p.Head) {
		t.Fatalf("used id %d, head %d", u.ID, p.Head)
	}
	return r.replyOf(p, u.Len)
}

// post makes bufs available, ordered with the device's accesses.
func (r *rig) post(bufs ...vt.Buf) vt.Posted {
	defer p9.LockGuest(r.dev)()
	return r.q.Post(bufs...)
}

// check verifies a reply's header and returns its body.
func check(t *testing.T, what string, rep []byte, typ byte, tag uint16) []byte {
	t.Helper()
	if len(rep) < 7 || le.Uint32(rep) != uint32(len(rep)) || le.Uint16(rep[5:]) != tag {
		t.Fatalf("%s: bad reply %x", what, rep)
	}
	if rep[4] == tRlerror && typ != tRlerror {
		t.Fatalf("%s: Rlerror errno %d", what, le.Uint32(rep[7:]))
	}
	if rep[4] != typ {
		t.Fatalf("%s: reply type %d, want %d", what, rep[4], typ)
	}
	return rep[7:]
}

func (r *rig) version(t *testing.T, msize uint32) uint32 {
	t.Helper()
	rep := r.call(t, msg(tTversion, noTag, u32(msize), str("9P2000.L")), 64)
	b := check(t, "Tversion", rep, tRversion, noTag)
	if got := string(b[6:]); got != "9P2000.L" {
		t.Fatalf("Rversion version %q", got)
	}
	return le.Uint32(b)
}

func (r *rig) attach(t *testing.T) {
	t.Helper()
	rep := r.call(t, msg(tTattach, 1, u32(0), u32(noFID), str("root"), str(""), u32(0)), 64)
	check(t, "Tattach", rep, tRattach, 1)
}

func TestConfigSpace(t *testing.T) {
	r := newRig(t)
	if got := vt.ReadReg(r.mmio, virtio.MMIODeviceID); got != 9 {
		t.Errorf("device id %d, want 9", got)
	}
	if vt.DeviceFeatures(r.mmio)&p9.FeatureMountTag == 0 {
		t.Errorf("VIRTIO_9P_MOUNT_TAG not offered")
	}
	cfg := make([]byte, 6)
	for i := range cfg {
		r.mmio.Read(virtio.MMIOConfigSpace+uint64(i), cfg[i:i+1])
	}
	if le.Uint16(cfg) != 2 || string(cfg[2:4]) != "p9" || cfg[4] != 0 {
		t.Errorf("config space %x", cfg)
	}
}

func TestNewConfig(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []p9.Config{
		{Root: root},
		{Tag: string(make([]byte, p9.MaxTagBytes+1)), Root: root},
		{Tag: "a\x00b", Root: root},
		{Tag: "t", Root: filepath.Join(root, "missing")},
		{Tag: "t", Root: file},
	} {
		if d, err := p9.New(cfg); err == nil {
			d.Close()
			t.Errorf("New(%q, %q) succeeded", cfg.Tag, cfg.Root)
		}
	}
}

// TestVersionAttachWalkRead puts a session through the request queue:
// Tversion, Tattach, Twalk, Tgetattr, Tlopen and Tread, the read's reply
// split across a header buffer and a data buffer as Linux's zero-copy
// path does.
func TestVersionAttachWalkRead(t *testing.T) {
	r := newRig(t)
	if got := r.version(t, 8192); got != 8192 {
		t.Fatalf("Rversion msize %d, want 8192", got)
	}
	r.attach(t)
	rep := r.call(t, msg(tTwalk, 2, u32(0), u32(1), u16(1), str("hello")), 64)
	b := check(t, "Twalk", rep, tRwalk, 2)
	if le.Uint16(b) != 1 {
		t.Fatalf("Rwalk %d qids", le.Uint16(b))
	}
	rep = r.call(t, msg(tTgetattr, 3, u32(1), u64(0x3fff)), 256)
	b = check(t, "Tgetattr", rep, tRgetattr, 3)
	// valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8]
	if size := le.Uint64(b[8+13+4+4+4+8+8:]); size != 19 {
		t.Errorf("Rgetattr size %d, want 19", size)
	}
	rep = r.call(t, msg(tTlopen, 4, u32(1), u32(0)), 64)
	check(t, "Tlopen", rep, tRlopen, 4)
	rep = r.call(t, msg(tTread, 5, u32(1), u64(6), u32(100)), 11, 100)
	b = check(t, "Tread", rep, tRread, 5)
	if n := le.Uint32(b); n != 13 || string(b[4:4+n]) != "from the host" {
		t.Errorf("Rread %d %q", n, b[4:])
	}
	// The reply does not fit the chain: returned with no bytes.
	p := r.post(vt.Readable(msg(tTread, 6, u32(1), u64(0), u32(100))), vt.Writable(12))
	vt.Kick(r.mmio, 0)
	if u := r.waitUsed(t); u.ID != uint32(p.Head) || u.Len != 0 {
		t.Errorf("oversize reply: used %+v, head %d", u, p.Head)
	}
	m := r.dev.Metrics()
	if m.Requests.Load() != 7 || m.Replies.Load() != 6 || m.Oversize.Load() != 1 {
		t.Errorf("requests %d replies %d oversize %d", m.Requests.Load(), m.Replies.Load(), m.Oversize.Load())
	}
}

// TestMsizeLowered checks that a Tversion asking more than MaxMessageSize
// gets at most that, and that a later message above the negotiated msize
// is refused before the server sees it.
func TestMsizeLowered(t *testing.T) {
	r := newRig(t)
	if got := r.version(t, 64<<20); got != p9.MaxMessageSize {
		t.Fatalf("Rversion msize %d, want %d", got, p9.MaxMessageSize)
	}
	if got := r.version(t, 4096); got != 4096 {
		t.Fatalf("Rversion msize %d, want 4096", got)
	}
	big := msg(tTwalk, 2, u32(0), u32(1), u16(1), str(string(make([]byte, 5000))))
	p := r.post(vt.Readable(big), vt.Writable(64))
	vt.Kick(r.mmio, 0)
	if u := r.waitUsed(t); u.ID != uint32(p.Head) || u.Len != 0 {
		t.Errorf("message above msize: used %+v", u)
	}
	if n := r.dev.Metrics().BadRequests.Load(); n != 1 {
		t.Errorf("bad requests %d, want 1", n)
	}
}

// TestMalformed posts chains the device must refuse without a reply.
func TestMalformed(t *testing.T) {
	r := newRig(t)
	r.version(t, 8192)
	good := msg(tTgetattr, 9, u32(0), u64(1))
	long := append([]byte(nil), good...)
	le.PutUint32(long, uint32(len(good)+1))
	for _, tc := range []struct {
		name string
		bufs []vt.Buf
	}{
		{"short", []vt.Buf{vt.Readable([]byte{1, 2, 3}), vt.Writable(64)}},
		{"size below header", []vt.Buf{vt.Readable([]byte{3, 0, 0, 0, tTgetattr, 9, 0}), vt.Writable(64)}},
		{"size beyond readable", []vt.Buf{vt.Readable(long), vt.Writable(64)}},
		{"no writable", []vt.Buf{vt.Readable(good)}},
		{"writable below header", []vt.Buf{vt.Readable(good), vt.Writable(6)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := r.post(tc.bufs...)
			vt.Kick(r.mmio, 0)
			if u := r.waitUsed(t); u.ID != uint32(p.Head) || u.Len != 0 {
				t.Errorf("used %+v, want head %d length 0", u, p.Head)
			}
		})
	}
	if n := r.dev.Metrics().BadRequests.Load(); n != 5 {
		t.Errorf("bad requests %d, want 5", n)
	}
	// The session still works.
	r.attach(t)
}

// TestManyInFlight posts several requests in one notification and matches
// each reply to its chain by tag, whatever the order of completion.
func TestManyInFlight(t *testing.T) {
	r := newRig(t)
	r.version(t, 8192)
	r.attach(t)
	const n = 16
	heads := map[uint32]uint16{}
	posted := map[uint32]vt.Posted{}
	for i := range n {
		tag := uint16(100 + i)
		p := r.post(vt.Readable(msg(tTgetattr, tag, u32(0), u64(0x3fff))), vt.Writable(256))
		heads[uint32(p.Head)] = tag
		posted[uint32(p.Head)] = p
	}
	vt.Kick(r.mmio, 0)
	for range n {
		u := r.waitUsed(t)
		tag, ok := heads[u.ID]
		if !ok {
			t.Fatalf("used id %d not posted or used twice", u.ID)
		}
		delete(heads, u.ID)
		check(t, "Tgetattr", r.replyOf(posted[u.ID], u.Len), tRgetattr, tag)
	}
}

// TestResetCloseGoroutines checks that Reset and Close end the session
// and its goroutines, and that the device works again after a reset.
func TestResetCloseGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newRig(t)
	r.version(t, 8192)
	r.attach(t)
	settle()
	vt.WriteReg(r.mmio, virtio.MMIOStatus, 0) // driver reset
	q := vt.NewDriver(t, r.mem, 0, queueSize, ramSize-0x1000)
	if err := vt.Init(r.mmio, vt.Handshake{Queues: []*vt.Driver{q}}); err != nil {
		t.Fatalf("Init after reset: %v", err)
	}
	r.q = q
	r.version(t, 8192)
	r.attach(t)
	settle()
	if err := r.dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// p9's receive loop may leave a goroutine that returns right after.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > before {
		t.Errorf("%d goroutines after Close, %d before", got, before)
	}
}
