// SPDX-License-Identifier: Apache-2.0

package qcow2_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/diskimage/qcow2"
)

// TestRefused makes images with features the package does not implement
// using qemu-img, and checks Open refuses them with the matching error in
// the given modes.
func TestRefused(t *testing.T) {
	requireQemuImg(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	tests := []struct {
		name    string
		args    []string // qemu-img create arguments before the file name
		want    error
		rwOnly  bool // read-only Open succeeds
		options bool // qemu-img may lack the feature: skip when create fails
	}{
		{"backing file", []string{"-b", base, "-F", "qcow2"}, qcow2.ErrBackingFile, false, false},
		{"luks", []string{"--object", "secret,id=sec0,data=123456", "-o", "encrypt.format=luks,encrypt.key-secret=sec0"}, qcow2.ErrEncrypted, false, true},
		{"external data file", []string{"-o", "data_file=" + filepath.Join(dir, "data.raw")}, qcow2.ErrExternalData, false, false},
		{"extended l2", []string{"-o", "extended_l2=on"}, qcow2.ErrExtendedL2, false, false},
		{"zstd", []string{"-o", "compression_type=zstd"}, qcow2.ErrCompression, false, true},
		{"8-bit refcounts", []string{"-o", "refcount_bits=8"}, qcow2.ErrRefcountWidth, true, false},
		{"64-bit refcounts", []string{"-o", "refcount_bits=64"}, qcow2.ErrRefcountWidth, true, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "img"+string(rune('a'+i))+".qcow2")
			args := append(append([]string{"create", "-q", "-f", "qcow2"}, tt.args...), path, "1M")
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				if tt.options {
					t.Skipf("this qemu-img cannot make the image: %v\n%s", err, out)
				}
				t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = openBytes(t, b, false)
			if !errors.Is(err, tt.want) || !errors.Is(err, qcow2.ErrUnsupported) {
				t.Errorf("Open(read-write) = %v, want %v and ErrUnsupported", err, tt.want)
			}
			img, err := openBytes(t, b, true)
			switch {
			case tt.rwOnly && err != nil:
				t.Errorf("Open(read-only) = %v, want success", err)
			case tt.rwOnly:
				if got := readAll(t, img); !bytes.Equal(got, make([]byte, 1<<20)) {
					t.Errorf("read-only image does not read as zeros")
				}
			case !errors.Is(err, tt.want):
				t.Errorf("Open(read-only) = %v, want %v", err, tt.want)
			}
			if err != nil {
				t.Logf("error text: %v", err)
			}
		})
	}
}

// TestReadOnlyRefcountWidths reads data from images with refcounts other
// than 16 bits, which only writing needs.
func TestReadOnlyRefcountWidths(t *testing.T) {
	requireQemuImg(t)
	for _, bits := range []string{"1", "8", "64"} {
		t.Run(bits, func(t *testing.T) {
			path, want := image{name: "r" + bits, opts: "cluster_size=4k,refcount_bits=" + bits, compress: true}.make(t, t.TempDir(), 1<<20)
			img := open(t, path, true)
			defer img.Close()
			if got := readAll(t, img); !bytes.Equal(got, want) {
				t.Fatalf("read: %s", firstDiff(got, want))
			}
		})
	}
}

// TestLazyRefcounts writes an image with the lazy refcounts compatible
// feature, which the package does not use; the dirty bit stays clear.
func TestLazyRefcounts(t *testing.T) {
	requireQemuImg(t)
	path, want := image{name: "lazy", opts: "lazy_refcounts=on", empty: true}.make(t, t.TempDir(), 1<<20)
	img := open(t, path, false)
	if _, err := img.WriteAt([]byte("lazy"), 70000); err != nil {
		t.Fatal(err)
	}
	copy(want[70000:], "lazy")
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path)
	if got := toRaw(t, path); !bytes.Equal(got, want) {
		t.Fatalf("after write: %s", firstDiff(got, want))
	}
}

// TestBitmaps clears the bitmaps autoclear bit on a read-write Open, so
// QEMU treats the bitmaps, which writes do not update, as inconsistent.
func TestBitmaps(t *testing.T) {
	requireQemuImg(t)
	path, _ := image{name: "bm", opts: "cluster_size=64k", empty: true}.make(t, t.TempDir(), 1<<20)
	if out, err := exec.Command("qemu-img", "bitmap", "--add", path, "b0").CombinedOutput(); err != nil {
		t.Skipf("qemu-img bitmap: %v\n%s", err, out)
	}
	hdr := func() uint64 {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return be64(b[88:])
	}
	if got := hdr(); got&1 == 0 {
		t.Fatalf("autoclear = %#x, want the bitmaps bit", got)
	}
	img := open(t, path, true)
	img.Close()
	if got := hdr(); got&1 == 0 {
		t.Errorf("read-only Open changed autoclear to %#x", got)
	}
	img = open(t, path, false)
	if _, err := img.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if got := hdr(); got != 0 {
		t.Errorf("autoclear after a read-write Open = %#x, want 0", got)
	}
	// QEMU now ignores the bitmaps extension, so it reports the bitmap
	// clusters as leaked; that is all it may report.
	qemuCheckLeaksOK(t, path)
}
