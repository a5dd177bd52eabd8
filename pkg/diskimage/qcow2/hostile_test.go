// SPDX-License-Identifier: Apache-2.0

package qcow2_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/diskimage/qcow2"
)

// Header offsets the tests patch (docs/interop/qcow2.txt).
const (
	offVersion     = 4
	offBacking     = 8
	offClusterBits = 20
	offSize        = 24
	offL1Size      = 36
	offL1          = 40
	offRefTable    = 48
	offRefClusters = 56
	offNbSnapshots = 60
	offSnapshots   = 64
	offIncompat    = 72
	offHeaderLen   = 100
	offCompression = 104
	entryOffset    = 0x00fffffffffffe00
	copied         = 1 << 63
	compressed     = 1 << 62
)

// hostileBase returns a valid version 3 image of 3 MiB with 4 KiB
// clusters, every cluster allocated (so the L1 table has two entries and
// each L2 entry names a data cluster), and its disk contents.
func hostileBase(t testing.TB, compat string) ([]byte, []byte) {
	t.Helper()
	requireQemuImg(t)
	dir := t.TempDir()
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(i%251 + 1)
	}
	raw, img := filepath.Join(dir, "base.raw"), filepath.Join(dir, "base.qcow2")
	if err := os.WriteFile(raw, want, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4k,compat="+compat, raw, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b, want
}

// layout locates the tables of an image in b.
type layout struct {
	l1, rt uint64 // table offsets
	l2     uint64 // the L2 table of L1 entry 0
}

func locate(b []byte) layout {
	l := layout{l1: be64(b[offL1:]), rt: be64(b[offRefTable:])}
	l.l2 = be64(b[l.l1:]) & entryOffset
	return l
}

// openBytes writes b to a file and opens it. The image is closed when the
// test ends.
func openBytes(t testing.TB, b []byte, readOnly bool) (*qcow2.Image, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hostile.qcow2")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(f, readOnly)
	if err != nil {
		f.Close()
		return nil, err
	}
	t.Cleanup(func() { img.Close() })
	return img, nil
}

// TestHostileOpen opens damaged images; each must fail Open with the
// given error in the given modes, without panicking.
func TestHostileOpen(t *testing.T) {
	base, _ := hostileBase(t, "1.1")
	l := locate(base)
	end := uint64(len(base)+4095) &^ 4095
	patch := func(f func(b []byte)) func([]byte) []byte {
		return func(b []byte) []byte { f(b); return b }
	}
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
		rwOnly bool // read-only Open succeeds
	}{
		{"empty file", func(b []byte) []byte { return b[:0] }, qcow2.ErrNotImage, false},
		{"raw file", patch(func(b []byte) { copy(b, "\x00\x00\x00\x00") }), qcow2.ErrNotImage, false},
		{"truncated header", func(b []byte) []byte { return b[:50] }, qcow2.ErrCorrupt, false},
		{"truncated v3 header", func(b []byte) []byte { return b[:90] }, qcow2.ErrCorrupt, false},
		{"truncated L1 table", func(b []byte) []byte { return b[:l.l1+4] }, qcow2.ErrCorrupt, false},
		{"truncated refcount table", func(b []byte) []byte { return b[:l.rt+100] }, qcow2.ErrCorrupt, false},
		{"version 1", patch(func(b []byte) { put32(b[offVersion:], 1) }), qcow2.ErrVersion, false},
		{"version 4", patch(func(b []byte) { put32(b[offVersion:], 4) }), qcow2.ErrVersion, false},
		{"cluster bits 8", patch(func(b []byte) { put32(b[offClusterBits:], 8) }), qcow2.ErrCorrupt, false},
		{"cluster bits 22", patch(func(b []byte) { put32(b[offClusterBits:], 22) }), qcow2.ErrClusterSize, false},
		{"cluster bits max", patch(func(b []byte) { put32(b[offClusterBits:], 0xffffffff) }), qcow2.ErrClusterSize, false},
		{"virtual size 2^60", patch(func(b []byte) { put64(b[offSize:], 1<<60) }), qcow2.ErrTooLarge, false},
		{"virtual size max", patch(func(b []byte) { put64(b[offSize:], 1<<64-1) }), qcow2.ErrTooLarge, false},
		{"L1 too large for clusters", patch(func(b []byte) { put64(b[offSize:], 64<<40) }), qcow2.ErrTooLarge, false},
		{"huge L1 size", patch(func(b []byte) { put32(b[offL1Size:], 0xffffffff) }), qcow2.ErrTooLarge, false},
		{"L1 size past EOF", patch(func(b []byte) { put32(b[offL1Size:], 1<<20) }), qcow2.ErrCorrupt, false},
		{"L1 too small", patch(func(b []byte) { put32(b[offL1Size:], 1) }), qcow2.ErrCorrupt, false},
		{"L1 past EOF", patch(func(b []byte) { put64(b[offL1:], end) }), qcow2.ErrCorrupt, false},
		{"L1 offset max", patch(func(b []byte) { put64(b[offL1:], 1<<64-4096) }), qcow2.ErrCorrupt, false},
		{"L1 unaligned", patch(func(b []byte) { put64(b[offL1:], l.l1+8) }), qcow2.ErrCorrupt, false},
		{"L1 at header", patch(func(b []byte) { put64(b[offL1:], 0) }), qcow2.ErrCorrupt, false},
		{"L1 overlaps refcount table", patch(func(b []byte) { put64(b[offL1:], l.rt) }), qcow2.ErrCorrupt, false},
		{"L1 entry past EOF", patch(func(b []byte) { put64(b[l.l1:], end|copied) }), qcow2.ErrCorrupt, false},
		{"L1 entry max", patch(func(b []byte) { put64(b[l.l1:], entryOffset|copied) }), qcow2.ErrCorrupt, false},
		{"L1 entry unaligned", patch(func(b []byte) { put64(b[l.l1:], (l.l2+512)|copied) }), qcow2.ErrCorrupt, false},
		{"L1 entry reserved bits", patch(func(b []byte) { put64(b[l.l1:], l.l2|copied|1) }), qcow2.ErrCorrupt, false},
		{"refcount table past EOF", patch(func(b []byte) { put64(b[offRefTable:], end) }), qcow2.ErrCorrupt, false},
		{"refcount table offset max", patch(func(b []byte) { put64(b[offRefTable:], 1<<64-4096) }), qcow2.ErrCorrupt, false},
		{"refcount table unaligned", patch(func(b []byte) { put64(b[offRefTable:], l.rt+8) }), qcow2.ErrCorrupt, false},
		{"refcount table huge", patch(func(b []byte) { put32(b[offRefClusters:], 0xffffffff) }), qcow2.ErrTooLarge, false},
		{"refcount table past EOF by size", patch(func(b []byte) { put32(b[offRefClusters:], 2000) }), qcow2.ErrCorrupt, false},
		{"refcount table empty", patch(func(b []byte) { put32(b[offRefClusters:], 0) }), qcow2.ErrCorrupt, false},
		{"refcount table at header", patch(func(b []byte) { put64(b[offRefTable:], 0) }), qcow2.ErrCorrupt, false},
		{"header length odd", patch(func(b []byte) { put32(b[offHeaderLen:], 105) }), qcow2.ErrCorrupt, false},
		{"header length short", patch(func(b []byte) { put32(b[offHeaderLen:], 72) }), qcow2.ErrCorrupt, false},
		{"header length past cluster", patch(func(b []byte) { put32(b[offHeaderLen:], 8192) }), qcow2.ErrCorrupt, false},
		{"compression type without bit", patch(func(b []byte) { b[offCompression] = 1 }), qcow2.ErrCorrupt, false},
		{"snapshot table past EOF", patch(func(b []byte) { put32(b[offNbSnapshots:], 1); put64(b[offSnapshots:], end) }), qcow2.ErrCorrupt, false},
		{"too many snapshots", patch(func(b []byte) { put32(b[offNbSnapshots:], 1<<31); put64(b[offSnapshots:], 4096) }), qcow2.ErrCorrupt, false},
		{"backing file", patch(func(b []byte) { put64(b[offBacking:], 200) }), qcow2.ErrBackingFile, false},
		{"unknown feature", patch(func(b []byte) { put64(b[offIncompat:], 1<<40) }), qcow2.ErrFeature, false},
		{"corrupt bit", patch(func(b []byte) { put64(b[offIncompat:], 2) }), qcow2.ErrMarkedCorrupt, false},
		{"dirty bit", patch(func(b []byte) { put64(b[offIncompat:], 1) }), qcow2.ErrDirty, true},
		{"refcount block past EOF", patch(func(b []byte) { put64(b[l.rt:], end) }), qcow2.ErrCorrupt, true},
		{"refcount block unaligned", patch(func(b []byte) { put64(b[l.rt:], be64(b[l.rt:])+512) }), qcow2.ErrCorrupt, true},
		{"refcount entry reserved bits", patch(func(b []byte) { put64(b[l.rt:], be64(b[l.rt:])|1) }), qcow2.ErrCorrupt, true},
		{"L2 table is a refcount block", patch(func(b []byte) { put64(b[l.l1:], be64(b[l.rt:])|copied) }), qcow2.ErrCorrupt, true},
		{"L2 table is the L1 table", patch(func(b []byte) { put64(b[l.l1:], l.l1|copied) }), qcow2.ErrCorrupt, true},
		{"two L1 entries share an L2 table", patch(func(b []byte) { put64(b[l.l1+8:], be64(b[l.l1:])) }), qcow2.ErrCorrupt, true},
		{"refcount block is the L1 table", patch(func(b []byte) { put64(b[l.rt:], l.l1) }), qcow2.ErrCorrupt, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(bytes.Clone(base))
			if _, err := openBytes(t, b, false); !errors.Is(err, tt.want) {
				t.Errorf("Open(read-write) = %v, want %v", err, tt.want)
			}
			img, err := openBytes(t, b, true)
			switch {
			case tt.rwOnly && err != nil:
				t.Errorf("Open(read-only) = %v, want success", err)
			case !tt.rwOnly && !errors.Is(err, tt.want):
				t.Errorf("Open(read-only) = %v, want %v", err, tt.want)
			case err == nil:
				readLoosely(t, img)
			}
		})
	}
}

// readLoosely reads the whole disk of an image that may be damaged: errors
// must wrap ErrCorrupt.
func readLoosely(t *testing.T, img *qcow2.Image) {
	t.Helper()
	p := make([]byte, 64<<10)
	for off := uint64(0); off < min(img.Size(), 64<<20); off += uint64(len(p)) {
		if _, err := img.ReadAt(p, int64(off)); err != nil && err != io.EOF && !errors.Is(err, qcow2.ErrCorrupt) {
			t.Fatalf("ReadAt(%d) = %v, want nil or ErrCorrupt", off, err)
		}
	}
}

// TestHostileEntries damages L2 entries, which Open does not read; the
// reads and writes that meet them fail with ErrCorrupt, and the rest of
// the disk stays usable.
func TestHostileEntries(t *testing.T) {
	base, want := hostileBase(t, "1.1")
	l := locate(base)
	end := uint64(len(base)+4095) &^ 4095
	tests := []struct {
		name      string
		entry     uint64 // new L2 entry 0
		readErr   bool   // reading guest cluster 0 fails
		writeErr  bool   // a partial write to guest cluster 0 fails
		metaAfter bool   // the entry points at the L1 table, which must not change
	}{
		{"past EOF", end | copied, true, true, false},
		{"offset max", entryOffset | copied, true, true, false},
		{"unaligned", (be64(base[l.l2:]) + 512) | copied, true, true, false},
		{"reserved bits", be64(base[l.l2:]) | 2, true, true, false},
		{"copied at offset 0", copied, true, true, false},
		{"compressed and copied", compressed | copied | 100, true, true, false},
		{"compressed past EOF", compressed | end, true, true, false},
		{"compressed offset max", compressed | (1<<52 - 1), true, true, false},
		{"compressed garbage", compressed | 7, true, true, false},                                     // inflates the header: invalid
		{"compressed max sectors at EOF", compressed | (0xff << 54) | (end - 600), true, true, false}, // clipped to EOF
		{"data onto metadata", l.l1 | copied, false, true, true},
		{"zero with offset past EOF", end | copied | 1, false, false, false}, // reads as zero; the write replaces it
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(base)
			put64(b[l.l2:], tt.entry)
			img, err := openBytes(t, b, false)
			if err != nil {
				t.Fatalf("Open() = %v", err)
			}
			p := make([]byte, 8192)
			if _, err := img.ReadAt(p, 0); tt.readErr != (err != nil) || (err != nil && !errors.Is(err, qcow2.ErrCorrupt)) {
				t.Errorf("ReadAt(cluster 0) = %v, want error %v (ErrCorrupt)", err, tt.readErr)
			}
			if _, err := img.ReadAt(p, 4096); err != nil {
				t.Errorf("ReadAt(cluster 1) = %v, want success", err)
			} else if !bytes.Equal(p[:4096], want[4096:8192]) {
				t.Errorf("ReadAt(cluster 1) returned other data")
			}
			if _, err := img.WriteAt([]byte("hi"), 10); tt.writeErr != (err != nil) || (err != nil && !errors.Is(err, qcow2.ErrCorrupt)) {
				t.Errorf("WriteAt(cluster 0) = %v, want error %v (ErrCorrupt)", err, tt.writeErr)
			}
			if _, err := img.WriteAt([]byte("ok"), 5000); err != nil {
				t.Errorf("WriteAt(cluster 1) = %v, want success", err)
			}
			if err := img.Sync(); err != nil {
				t.Errorf("Sync() = %v", err)
			}
			if _, err := img.ReadAt(p[:2], 5000); err != nil || string(p[:2]) != "ok" {
				t.Errorf("ReadAt(5000) = %q, %v, want \"ok\"", p[:2], err)
			}
		})
	}
}

// TestTruncated opens every prefix length of an image at coarse steps: no
// panic, and every error is ErrCorrupt or ErrNotImage.
func TestTruncated(t *testing.T) {
	base, _ := hostileBase(t, "1.1")
	for n := 0; n < len(base); n += 1 + n/3 {
		for _, ro := range []bool{true, false} {
			img, err := openBytes(t, base[:n], ro)
			if err != nil {
				if !errors.Is(err, qcow2.ErrCorrupt) && !errors.Is(err, qcow2.ErrNotImage) {
					t.Errorf("Open(%d bytes) = %v, want ErrCorrupt or ErrNotImage", n, err)
				}
				continue
			}
			readLoosely(t, img)
			if !ro {
				if _, err := img.WriteAt(make([]byte, 5000), 1000); err != nil && !errors.Is(err, qcow2.ErrCorrupt) {
					t.Errorf("%d bytes: WriteAt = %v", n, err)
				}
			}
		}
	}
}

// TestVersion2ZeroBit checks that the zero flag, reserved in version 2,
// is corrupt there.
func TestVersion2ZeroBit(t *testing.T) {
	base, _ := hostileBase(t, "0.10")
	l := locate(base)
	put64(base[l.l2:], be64(base[l.l2:])|1)
	img, err := openBytes(t, base, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.ReadAt(make([]byte, 512), 0); !errors.Is(err, qcow2.ErrCorrupt) {
		t.Errorf("ReadAt = %v, want ErrCorrupt", err)
	}
}

// TestEmptyDisk opens a disk of size 0 whose L1 fields are garbage: an
// empty L1 table is never read.
func TestEmptyDisk(t *testing.T) {
	base, _ := hostileBase(t, "1.1")
	put64(base[offSize:], 0)
	put32(base[offL1Size:], 0)
	put64(base[offL1:], 1<<63+12345)
	for _, ro := range []bool{true, false} {
		img, err := openBytes(t, base, ro)
		if err != nil {
			t.Fatalf("Open(ro=%v) = %v", ro, err)
		}
		if n, err := img.ReadAt(make([]byte, 1), 0); n != 0 || err != io.EOF {
			t.Errorf("ReadAt = %d, %v, want 0, EOF", n, err)
		}
		if _, err := img.WriteAt(make([]byte, 1), 0); err == nil {
			t.Errorf("WriteAt succeeded on an empty disk")
		}
		if err := img.Sync(); err != nil {
			t.Errorf("Sync() = %v", err)
		}
	}
}
