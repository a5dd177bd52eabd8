// SPDX-License-Identifier: Apache-2.0

package qcow2_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/diskimage/qcow2"
)

// requireQemuImg skips the test when qemu-img is not installed.
func requireQemuImg(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed; the qcow2 tests need it to make and check images")
	}
}

// run runs a command and fails the test if it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuCheck runs qemu-img check on path and fails the test unless it finds
// no errors and no leaks (exit status 0).
func qemuCheck(t testing.TB, path string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "-f", "qcow2", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
}

// qemuCheckLeaksOK runs qemu-img check on path and fails the test if it
// finds corruption; leaked clusters (exit status 3) are allowed.
func qemuCheckLeaksOK(t testing.TB, path string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "-f", "qcow2", path).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
}

// toRaw converts the qcow2 image at path to raw with qemu-img and returns
// the disk contents.
func toRaw(t testing.TB, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pattern returns n bytes of test data: 4 KiB blocks that are, by turns,
// random (incompressible), repetitive (compressible) and zero (left
// unallocated by qemu-img convert), laid out unevenly so clusters of
// every size see each kind.
func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for off := 0; off < n; off += 4096 {
		blk := b[off:min(off+4096, n)]
		switch r.IntN(5) {
		case 0, 1:
			for i := range blk {
				blk[i] = byte(r.Uint32())
			}
		case 2:
			for i := range blk {
				blk[i] = byte(off/4096 + i%7)
			}
		default: // zero; long zero runs make whole zero clusters
		}
	}
	// Whole zero stretches of 256 KiB, so 64 KiB-cluster images have
	// unallocated clusters too.
	for off := 512 << 10; off+256<<10 <= n; off += 1 << 20 {
		clear(b[off : off+256<<10])
	}
	return b
}

// image describes how a test image is made.
type image struct {
	name     string
	opts     string // qemu-img -o options
	compress bool   // convert with -c
	empty    bool   // qemu-img create instead of convert
}

var images = []image{
	{name: "v3-64k", opts: "cluster_size=64k"},
	{name: "v2-64k", opts: "compat=0.10,cluster_size=64k"},
	{name: "v3-512", opts: "cluster_size=512"},
	{name: "v2-4k", opts: "compat=0.10,cluster_size=4k"},
	{name: "v3-2m", opts: "cluster_size=2M"},
	{name: "v3-64k-compressed", opts: "cluster_size=64k", compress: true},
	{name: "v2-4k-compressed", opts: "compat=0.10,cluster_size=4k", compress: true},
	{name: "v3-512-compressed", opts: "cluster_size=512", compress: true},
	{name: "v3-2m-compressed", opts: "cluster_size=2M", compress: true},
	{name: "v3-64k-empty", opts: "cluster_size=64k", empty: true},
	{name: "v2-512-empty", opts: "compat=0.10,cluster_size=512", empty: true},
}

// diskSize is the virtual size of the test images: not a multiple of any
// cluster size above 4 KiB.
const diskSize = 5<<20 + 12<<10

// make creates the image in dir and returns its path and disk contents.
func (im image) make(t testing.TB, dir string, size int) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, im.name+".qcow2")
	if im.empty {
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", im.opts, path, fmt.Sprint(size))
		return path, make([]byte, size)
	}
	want := pattern(size, uint64(len(im.name)))
	raw := filepath.Join(dir, im.name+".raw")
	if err := os.WriteFile(raw, want, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"convert", "-f", "raw", "-O", "qcow2", "-o", im.opts}
	if im.compress {
		args = append(args, "-c")
	}
	run(t, "qemu-img", append(args, raw, path)...)
	return path, want
}

// open opens the image at path.
func open(t testing.TB, path string, readOnly bool) *qcow2.Image {
	t.Helper()
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(f, readOnly)
	if err != nil {
		f.Close()
		t.Fatalf("Open(%s, %v) = %v", filepath.Base(path), readOnly, err)
	}
	return img
}

// readAll reads the whole disk in uneven chunks.
func readAll(t testing.TB, img *qcow2.Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	for off, n := 0, 777; off < len(b); off, n = off+n, n*3%(300<<10)+1 {
		end := min(off+n, len(b))
		if got, err := img.ReadAt(b[off:end], int64(off)); got != end-off || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", end-off, off, got, err)
		}
	}
	return b
}

// firstDiff describes the first difference between got and want.
func firstDiff(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d (%#x): got %#x, want %#x", i, i, got[i], want[i])
		}
	}
	return "equal"
}

func TestRead(t *testing.T) {
	requireQemuImg(t)
	for _, tt := range images {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, want := tt.make(t, t.TempDir(), diskSize)
			img := open(t, path, true)
			defer img.Close()
			if img.Size() != uint64(len(want)) {
				t.Fatalf("Size() = %d, want %d", img.Size(), len(want))
			}
			if got := readAll(t, img); !bytes.Equal(got, want) {
				t.Fatalf("disk differs from the raw file: %s", firstDiff(got, want))
			}
			// Unaligned reads anywhere, including across the end.
			r := rand.New(rand.NewPCG(1, 2))
			for range 200 {
				off := r.IntN(len(want) + 10)
				n := r.IntN(3 * int(img.ClusterSize()))
				p := make([]byte, n)
				got, err := img.ReadAt(p, int64(off))
				wantN := max(0, min(n, len(want)-off))
				wantErr := error(nil)
				if wantN < n {
					wantErr = io.EOF
				}
				if got != wantN || err != wantErr || !bytes.Equal(p[:got], want[min(off, len(want)):min(off, len(want))+wantN]) {
					t.Fatalf("ReadAt(%d bytes at %d) = %d, %v, want %d, %v (data equal %v)", n, off, got, err, wantN, wantErr,
						bytes.Equal(p[:got], want[min(off, len(want)):min(off, len(want))+wantN]))
				}
			}
			if _, err := img.WriteAt([]byte{1}, 0); !errors.Is(err, qcow2.ErrReadOnly) {
				t.Errorf("WriteAt on a read-only image = %v, want ErrReadOnly", err)
			}
		})
	}
}

// write is one WriteAt of a test.
type write struct{ off, n int }

// writes returns scattered and unaligned writes for a disk of size bytes
// with clusters of cs bytes: within a cluster, across cluster boundaries,
// whole clusters, the first and last bytes, and random ones.
func writes(size, cs int, seed uint64) []write {
	ws := []write{
		{0, 1},
		{size - 1, 1},
		{cs - 3, 7},               // across the first cluster boundary
		{3*cs + 100, 2*cs + 1000}, // spans several clusters
		{8 * cs, cs},              // one whole cluster
		{size - 2*cs - 5, 2*cs + 5},
		{size / 2, 512},
		{size/2 + 100, 50}, // into the cluster just written
	}
	for i, w := range ws { // keep them inside small disks of large clusters
		ws[i].off = max(0, min(w.off, size-1))
		ws[i].n = min(w.n, size-ws[i].off)
	}
	r := rand.New(rand.NewPCG(seed, 3))
	for range 60 {
		n := 1 + r.IntN(3*cs)
		if r.IntN(4) == 0 {
			n = 1 + r.IntN(600)
		}
		n = min(n, size)
		ws = append(ws, write{r.IntN(size - n + 1), n})
	}
	return ws
}

func TestWrite(t *testing.T) {
	requireQemuImg(t)
	for _, tt := range images {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, want := tt.make(t, t.TempDir(), diskSize)
			img := open(t, path, false)
			cs := int(img.ClusterSize())
			r := rand.New(rand.NewPCG(4, 5))
			for i, w := range writes(len(want), cs, uint64(cs)) {
				p := make([]byte, w.n)
				for j := range p {
					p[j] = byte(r.Uint32())
				}
				if n, err := img.WriteAt(p, int64(w.off)); n != w.n || err != nil {
					t.Fatalf("write %d: WriteAt(%d bytes at %d) = %d, %v", i, w.n, w.off, n, err)
				}
				copy(want[w.off:], p)
				// Read back through the cache, before anything is synced.
				got := make([]byte, w.n+2)
				start := max(0, w.off-1)
				n, _ := img.ReadAt(got, int64(start))
				if !bytes.Equal(got[:n], want[start:start+n]) {
					t.Fatalf("write %d: read back differs: %s", i, firstDiff(got[:n], want[start:start+n]))
				}
				if i == 20 {
					if err := img.Sync(); err != nil {
						t.Fatalf("Sync() = %v", err)
					}
				}
			}
			if got := readAll(t, img); !bytes.Equal(got, want) {
				t.Fatalf("disk after writes: %s", firstDiff(got, want))
			}
			if err := img.Close(); err != nil {
				t.Fatalf("Close() = %v", err)
			}
			if err := img.Close(); err != nil {
				t.Errorf("second Close() = %v, want nil", err)
			}
			if _, err := img.ReadAt(make([]byte, 1), 0); !errors.Is(err, qcow2.ErrClosed) {
				t.Errorf("ReadAt after Close = %v, want ErrClosed", err)
			}
			qemuCheck(t, path)
			if got := toRaw(t, path); !bytes.Equal(got, want) {
				t.Fatalf("qemu-img convert of the written image: %s", firstDiff(got, want))
			}
			img = open(t, path, true)
			defer img.Close()
			if got := readAll(t, img); !bytes.Equal(got, want) {
				t.Fatalf("reopened image: %s", firstDiff(got, want))
			}
		})
	}
}

// TestWriteOutOfRange checks that writes outside the disk write nothing.
func TestWriteOutOfRange(t *testing.T) {
	requireQemuImg(t)
	path, _ := image{name: "e", opts: "cluster_size=4k", empty: true}.make(t, t.TempDir(), 1<<20)
	img := open(t, path, false)
	defer img.Close()
	for _, w := range []struct {
		off int64
		n   int
	}{{-1, 1}, {1 << 20, 1}, {1<<20 - 1, 2}, {1 << 62, 1}, {1<<63 - 1, 1}} {
		if n, err := img.WriteAt(make([]byte, w.n), w.off); n != 0 || !errors.Is(err, qcow2.ErrRange) {
			t.Errorf("WriteAt(%d bytes at %d) = %d, %v, want 0, ErrRange", w.n, w.off, n, err)
		}
	}
	if _, err := img.ReadAt(make([]byte, 1), -1); !errors.Is(err, qcow2.ErrRange) {
		t.Errorf("ReadAt at -1 = %v, want ErrRange", err)
	}
	if n, err := img.ReadAt(make([]byte, 1), 1<<20); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v, want 0, EOF", n, err)
	}
	if n, err := img.WriteAt(nil, 1<<20); n != 0 || err != nil {
		t.Errorf("empty WriteAt at the end = %d, %v, want 0, nil", n, err)
	}
}

// TestZeroClusters reads and overwrites version 3 zero clusters, with and
// without a preallocated host cluster, made by qemu-io.
func TestZeroClusters(t *testing.T) {
	requireQemuImg(t)
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("qemu-io not installed")
	}
	path, want := image{name: "z", opts: "cluster_size=64k", empty: true}.make(t, t.TempDir(), 1<<20)
	run(t, "qemu-io", "-f", "qcow2",
		"-c", "write -P 0xaa 0 512k",
		"-c", "write -z 0 64k", // zero, keeps the cluster
		"-c", "write -z -u 128k 64k", // zero, unmapped
		"-c", "write -z 600k 64k", // zero over unallocated, unaligned end
		path)
	for i := range 512 << 10 {
		want[i] = 0xaa
	}
	clear(want[0 : 64<<10])
	clear(want[128<<10 : 192<<10])
	clear(want[600<<10 : 664<<10])
	var extents []struct {
		Zero, Data bool
		Offset     *int64
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "--output=json", path)), &extents); err != nil {
		t.Fatalf("qemu-img map: %v", err)
	}
	if !slices.ContainsFunc(extents, func(e struct {
		Zero, Data bool
		Offset     *int64
	}) bool {
		return e.Zero && !e.Data && e.Offset != nil
	}) {
		t.Fatalf("qemu-io made no preallocated zero cluster: %+v", extents)
	}
	img := open(t, path, false)
	if got := readAll(t, img); !bytes.Equal(got, want) {
		t.Fatalf("read: %s", firstDiff(got, want))
	}
	for _, off := range []int{100, 128<<10 + 7, 610 << 10} {
		p := bytes.Repeat([]byte{0x5c}, 1000)
		if _, err := img.WriteAt(p, int64(off)); err != nil {
			t.Fatalf("WriteAt(%d) = %v", off, err)
		}
		copy(want[off:], p)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path)
	if got := toRaw(t, path); !bytes.Equal(got, want) {
		t.Fatalf("after writes: %s", firstDiff(got, want))
	}
}

// TestRefcountGrowth writes enough through 512-byte clusters to need new
// refcount blocks and, twice over, a larger refcount table.
func TestRefcountGrowth(t *testing.T) {
	requireQemuImg(t)
	const size = 40 << 20
	path, want := image{name: "g", opts: "cluster_size=512", empty: true}.make(t, t.TempDir(), size)
	img := open(t, path, false)
	p := make([]byte, 61<<10)
	for off := 0; off < 24<<20; off += len(p) {
		for i := range p {
			p[i] = byte(off/len(p) + i)
		}
		n := min(len(p), size-off)
		if _, err := img.WriteAt(p[:n], int64(off)); err != nil {
			t.Fatalf("WriteAt(%d) = %v", off, err)
		}
		copy(want[off:], p[:n])
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path)
	info := run(t, "qemu-img", "info", "--output=json", path)
	if got := toRaw(t, path); !bytes.Equal(got, want) {
		t.Fatalf("after writes: %s\n%s", firstDiff(got, want), info)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 64)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	if clusters := be32(hdr[56:]); clusters < 4 {
		t.Errorf("refcount table has %d clusters, want the test to have grown it at least twice", clusters)
	}
}

// TestSnapshots serves the active state of an image with internal
// snapshots read-only and refuses to write it.
func TestSnapshots(t *testing.T) {
	requireQemuImg(t)
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("qemu-io not installed")
	}
	path, want := image{name: "s", opts: "cluster_size=4k"}.make(t, t.TempDir(), 1<<20)
	run(t, "qemu-img", "snapshot", "-c", "before", path)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x77 4096 8192", path)
	for i := 4096; i < 4096+8192; i++ {
		want[i] = 0x77
	}
	img := open(t, path, true)
	defer img.Close()
	if got := readAll(t, img); !bytes.Equal(got, want) {
		t.Fatalf("read: %s", firstDiff(got, want))
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := qcow2.Open(f, false); !errors.Is(err, qcow2.ErrSnapshots) || !errors.Is(err, qcow2.ErrUnsupported) {
		t.Errorf("Open(read-write) = %v, want ErrSnapshots", err)
	}
}

// TestConcurrent reads from several goroutines while another writes;
// run it with -race.
func TestConcurrent(t *testing.T) {
	requireQemuImg(t)
	path, want := image{name: "c", opts: "cluster_size=4k", compress: true}.make(t, t.TempDir(), 2<<20)
	img := open(t, path, false)
	half := len(want) / 2
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			p := make([]byte, 10000)
			for i := range 100 {
				off := (g*7919 + i*4099) % (half - len(p))
				if _, err := img.ReadAt(p, int64(off)); err != nil {
					t.Errorf("ReadAt(%d) = %v", off, err)
					return
				}
				if !bytes.Equal(p, want[off:off+len(p)]) {
					t.Errorf("ReadAt(%d) returned other data", off)
					return
				}
			}
		})
	}
	wg.Go(func() {
		p := bytes.Repeat([]byte{0xee}, 3000)
		for off := half; off+len(p) <= len(want); off += 5000 {
			if _, err := img.WriteAt(p, int64(off)); err != nil {
				t.Errorf("WriteAt(%d) = %v", off, err)
				return
			}
			if off%(50000) == 0 {
				if err := img.Sync(); err != nil {
					t.Errorf("Sync() = %v", err)
				}
			}
		}
	})
	wg.Wait()
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path)
}
