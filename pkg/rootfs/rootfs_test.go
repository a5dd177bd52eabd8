// SPDX-License-Identifier: Apache-2.0

package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testLayers returns three layers that exercise every feature, in order.
func testLayers() [][]tent {
	var l0 []tent
	l0 = append(l0, tent{name: "./", typ: tar.TypeDir, mode: 0o755, mtime: time.Unix(1600000000, 5)})
	l0 = append(l0, dir("files/", 0o755))
	for i, n := range []int{0, 1, 100, 3000, 4095, 4096, 4097, 8191, 8192, 12345, 1<<20 + 7, 3 << 20} {
		l0 = append(l0, file(fmt.Sprintf("files/f%02d-%d", i, n), randBytes(uint64(i), n), 0o644))
	}
	// Deep directories.
	p := "deep"
	for i := range 40 {
		l0 = append(l0, dir(p, 0o750))
		p += fmt.Sprintf("/d%d", i)
	}
	l0 = append(l0, file(p+"-leaf", []byte("leaf"), 0o600))
	// A directory spanning several blocks, with long names.
	l0 = append(l0, dir("many/", 0o755))
	for i := range 600 {
		l0 = append(l0, file(fmt.Sprintf("many/entry-%04d-%s", i, strings.Repeat("x", i%40)), []byte{byte(i)}, 0o644))
	}
	l0 = append(l0, dir("names/", 0o755),
		file("names/"+strings.Repeat("n", 255), []byte("max name"), 0o644),
		file("names/"+strings.Repeat("m", 254)+"é"[:1], []byte("high byte"), 0o644),
		file("names/-dash", nil, 0o644), file("names/!bang", nil, 0o644))
	// Special modes, big ids, nanosecond mtimes, xattrs.
	l0 = append(l0, dir("special/", 0o755),
		tent{name: "special/suid", typ: tar.TypeReg, body: []byte("#!/bin/sh\n"), mode: 0o4755, uid: 0, gid: 0},
		tent{name: "special/sgid", typ: tar.TypeReg, body: []byte("x"), mode: 0o2711, uid: 100000, gid: 200000},
		tent{name: "special/tmp", typ: tar.TypeDir, mode: 0o1777},
		tent{name: "special/bigid", typ: tar.TypeReg, body: []byte("big"), mode: 0o640, uid: 4000000000, gid: 65536,
			mtime: time.Unix(1234567890, 123456789)},
		tent{name: "special/old", typ: tar.TypeReg, body: []byte("old"), mode: 0o644, mtime: time.Unix(-100, 0)},
		tent{name: "special/xattr", typ: tar.TypeReg, body: bytes.Repeat([]byte("z"), 5000), mode: 0o755, xattrs: map[string]string{
			"security.capability":     "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"user.comment":            "hello",
			"trusted.overlay.opaque":  "y",
			"system.posix_acl_access": "\x02\x00\x00\x00\x01\x00\x07\x00\xff\xff\xff\xff",
			"system.unknown":          "skipped",
		}},
		tent{name: "special/xattr-big", typ: tar.TypeReg, body: bytes.Repeat([]byte("q"), 4000), mode: 0o644, xattrs: map[string]string{
			"user.big": strings.Repeat("v", 3000), "user.big2": strings.Repeat("w", 2000),
		}},
		tent{name: "special/xattr-dir", typ: tar.TypeDir, mode: 0o700, xattrs: map[string]string{"user.d": "1"}},
		tent{name: "special/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		tent{name: "special/sda1", typ: tar.TypeBlock, mode: 0o660, major: 8, minor: 1, gid: 6},
		tent{name: "special/bigdev", typ: tar.TypeChar, mode: 0o600, major: 4095, minor: 1<<20 - 1},
		tent{name: "special/fifo", typ: tar.TypeFifo, mode: 0o644},
		symlink("special/rel", "../files/f02-100"),
		symlink("special/abs", "/etc/passwd"),
		symlink("special/dangling", "nowhere/at/all"),
		symlink("special/longlink", strings.Repeat("a/", 2000)+"end"),
		// Hard links within the layer.
		hardlink("special/suid-link", "special/suid"),
		hardlink("special/fifo-link", "./special/fifo"),
		hardlink("special/sym-link", "special/rel"),
		file("special/doomed", []byte("doomed"), 0o644),
		hardlink("special/doomed-link", "special/doomed"),
	)
	l0 = append(l0, dir("wh/", 0o755), file("wh/gone", []byte("gone"), 0o644), dir("wh/gonedir", 0o755),
		file("wh/gonedir/inner", []byte("inner"), 0o644), file("wh/kept", []byte("kept"), 0o644),
		dir("opq/", 0o755), file("opq/lower", []byte("lower"), 0o644), dir("opq/sub", 0o755),
		file("opq/sub/lowerdeep", []byte("deep"), 0o644),
		file("replace/file-to-dir", []byte("file"), 0o644), dir("replace/dir-to-file", 0o755),
		file("replace/dir-to-file/child", []byte("child"), 0o644),
		file("replace/content", []byte("v1"), 0o644),
		tent{name: "replace/meta", typ: tar.TypeDir, mode: 0o700, uid: 5},
		file("replace/meta/child", []byte("c"), 0o644))
	l0 = append([]tent{dir("replace", 0o755)}, l0...)

	l1 := []tent{
		whiteout("wh/.wh.gone"),
		whiteout("wh/.wh.gonedir"),
		whiteout("wh/.wh.never-existed"),
		whiteout("opq/.wh..wh..opq"),
		dir("opq/sub", 0o755), // merged with lower, then emptied by the opaque marker
		file("opq/upper", []byte("upper"), 0o644),
		dir("replace/file-to-dir", 0o711),
		file("replace/file-to-dir/new", []byte("new"), 0o644),
		file("replace/dir-to-file", []byte("now a file"), 0o600),
		file("replace/content", []byte("v2"), 0o644),
		file("replace/content", []byte("v3 last wins"), 0o644),
		tent{name: "replace/meta", typ: tar.TypeDir, mode: 0o755, uid: 7, mtime: time.Unix(1, 1)},
		hardlink("special/cross-layer-link", "files/f03-3000"),
		whiteout("special/.wh.doomed"),
		file("special/added", []byte("added"), 0o644),
	}
	l2 := []tent{
		file("wh/gone", []byte("back"), 0o644), // re-added after the whiteout below
		whiteout("wh/.wh.gone"),                // same layer: does not hide it
		whiteout("special/.wh.added"),
		file("special/added", []byte("re-added"), 0o640),
		whiteout("special/.wh.never"),
	}
	return [][]tent{l0, l1, l2}
}

func TestBuildReadBack(t *testing.T) {
	m := newModel()
	var layers [][]byte
	for i, l := range testLayers() {
		m.apply(i, l)
		layers = append(layers, mkLayer(t, l...))
	}
	img, st, err := build(t, layers...)
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	t.Logf("stats: %+v", st)
	if st.SkippedXattrs != 1 {
		t.Errorf("SkippedXattrs = %d, want 1", st.SkippedXattrs)
	}
	if st.Image.Inodes != distinctInodes(m) {
		t.Errorf("Image.Inodes = %d, want %d", st.Image.Inodes, distinctInodes(m))
	}
	if int64(len(img)) != st.Image.ImageBytes {
		t.Errorf("image is %d bytes, Stats.Image.ImageBytes = %d", len(img), st.Image.ImageBytes)
	}
	compare(t, m, readBack(t, img))
	// Spot checks that do not depend on the model.
	for _, p := range []string{"wh/gonedir", "wh/gonedir/inner", "special/doomed", "opq/lower", "opq/sub/lowerdeep"} {
		if _, ok := m.files[p]; ok {
			t.Errorf("model still has %q", p)
		}
	}
	t.Run("erofs-utils", func(t *testing.T) { checkErofsUtils(t, img, distinctInodes(m)) })
	t.Run("mount", func(t *testing.T) { checkMount(t, img, m) })
}

func TestDeterministic(t *testing.T) {
	var layers [][]byte
	for _, l := range testLayers() {
		layers = append(layers, mkLayer(t, l...))
	}
	a, _, err := build(t, layers...)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := build(t, layers...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same layers differ")
	}
}

func TestEmpty(t *testing.T) {
	img, st, err := build(t)
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	if st.Image.Inodes != 1 {
		t.Errorf("Inodes = %d, want 1", st.Image.Inodes)
	}
	compare(t, newModel(), readBack(t, img))
	t.Run("erofs-utils", func(t *testing.T) { checkErofsUtils(t, img, 1) })
}

func TestSymlinkParent(t *testing.T) {
	l0 := mkLayer(t,
		dir("usr/", 0o755), dir("usr/lib/", 0o755),
		symlink("lib", "usr/lib"),
		symlink("abs", "/usr/lib"),
		symlink("escape", "../../../../usr/lib"),
		symlink("loop1", "loop2"), symlink("loop2", "loop1"),
		file("afile", []byte("x"), 0o644),
		symlink("tofile", "afile"),
	)
	cases := []struct {
		name    string
		entry   string
		wantErr error
		want    string // path of the written file
	}{
		{"relative", "lib/a.so", nil, "usr/lib/a.so"},
		{"absolute target", "abs/b.so", nil, "usr/lib/b.so"},
		{"dotdot clamps at root", "escape/c.so", nil, "usr/lib/c.so"},
		{"loop", "loop1/x", rootfs.ErrSymlinkLoop, ""},
		{"through file", "afile/x", rootfs.ErrNotDir, ""},
		{"through symlink to file", "tofile/x", rootfs.ErrNotDir, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, _, err := build(t, l0, mkLayer(t, file(tc.entry, []byte("new"), 0o644)))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Build(%q) = %v, want %v", tc.entry, err, tc.wantErr)
			}
			if err != nil {
				var ee *rootfs.EntryError
				if !errors.As(err, &ee) || ee.Layer != 1 || ee.Name != tc.entry {
					t.Errorf("Build(%q) error %v is not an EntryError for layer 1", tc.entry, err)
				}
				return
			}
			files := readBack(t, img)
			if g, ok := files[tc.want]; !ok || string(g.body) != "new" {
				t.Errorf("Build(%q): %q not written", tc.entry, tc.want)
			}
			if g := files["lib"]; g == nil || g.link != "usr/lib" {
				t.Errorf("symlink lib changed: %+v", g)
			}
		})
	}
}

func TestMalicious(t *testing.T) {
	long := strings.Repeat("a", 256)
	cases := []struct {
		name    string
		layer   []byte
		wantErr error
	}{
		{"dotdot", mkLayer(t, file("../etc/passwd", nil, 0o644)), rootfs.ErrUnsafePath},
		{"inner dotdot", mkLayer(t, file("a/../../b", nil, 0o644)), rootfs.ErrUnsafePath},
		{"absolute", mkLayer(t, file("/etc/passwd", nil, 0o644)), rootfs.ErrUnsafePath},
		{"component too long", mkLayer(t, file(long, nil, 0o644)), rootfs.ErrNameTooLong},
		{"path too long", mkLayer(t, file(strings.Repeat("a/", 2100)+"b", nil, 0o644)), rootfs.ErrNameTooLong},
		{"symlink target too long", mkLayer(t, symlink("l", strings.Repeat("a", 4096))), rootfs.ErrNameTooLong},
		{"hardlink outside", mkLayer(t, hardlink("l", "../../etc/shadow")), rootfs.ErrHardlinkTarget},
		{"hardlink absolute", mkLayer(t, hardlink("l", "/etc/shadow")), rootfs.ErrHardlinkTarget},
		{"hardlink missing", mkLayer(t, hardlink("l", "nope")), rootfs.ErrHardlinkTarget},
		{"hardlink dir", mkLayer(t, dir("d", 0o755), hardlink("l", "d")), rootfs.ErrHardlinkTarget},
		{"whiteout dotdot", mkLayer(t, whiteout("a/.wh..."), dir("a", 0o755)), rootfs.ErrUnsafePath},
		{"root as file", mkLayer(t, file(".", nil, 0o644)), rootfs.ErrUnsafePath},
		{"uid beyond 32 bits", mkLayer(t, tent{name: "f", typ: tar.TypeReg, uid: 1 << 33}), rootfs.ErrUnsupportedEntry},
		{"device too big", mkLayer(t, tent{name: "c", typ: tar.TypeChar, major: 5000}), rootfs.ErrUnsupportedEntry},
		{"unknown type", mkLayer(t, tent{name: "x", typ: 'Z'}), rootfs.ErrUnsupportedEntry},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := build(t, tc.layer)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Build = %v, want %v", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "rootfs: ") {
				t.Errorf("error %q lacks the rootfs: prefix", err)
			}
		})
	}
}

// TestLyingSizes covers truncated streams and size claims beyond the limits.
func TestLyingSizes(t *testing.T) {
	full := mkLayer(t, file("f", bytes.Repeat([]byte("x"), 10000), 0o644))
	if _, _, err := build(t, full[:3000]); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Build(truncated) = %v, want io.ErrUnexpectedEOF", err)
	}
	// A header claiming 1 TB with no data behind it.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	if _, _, err := build(t, buf.Bytes()); !errors.Is(err, rootfs.ErrLimit) {
		t.Errorf("Build(1 TB claim) = %v, want ErrLimit", err)
	}
	// MaxEntries.
	l := mkLayer(t, file("a", nil, 0o644), file("b", nil, 0o644), file("c", nil, 0o644))
	_, err := rootfs.Build(context.Background(), []io.Reader{bytes.NewReader(l)}, io.Discard, rootfs.Options{MaxEntries: 2})
	if !errors.Is(err, rootfs.ErrLimit) {
		t.Errorf("Build(MaxEntries 2, 3 files) = %v, want ErrLimit", err)
	}
	_, err = rootfs.Build(context.Background(), []io.Reader{bytes.NewReader(full)}, io.Discard, rootfs.Options{MaxDataBytes: 9999})
	if !errors.Is(err, rootfs.ErrLimit) {
		t.Errorf("Build(MaxDataBytes 9999, 10000-byte file) = %v, want ErrLimit", err)
	}
}

func TestTreeBrokenAfterError(t *testing.T) {
	tr := rootfs.NewTree(rootfs.Options{TempDir: t.TempDir()})
	defer tr.Close()
	if err := tr.Apply(context.Background(), bytes.NewReader(mkLayer(t, file("../x", nil, 0)))); err == nil {
		t.Fatal("Apply(../x) = nil")
	}
	if err := tr.Apply(context.Background(), bytes.NewReader(mkLayer(t, file("ok", nil, 0)))); !errors.Is(err, rootfs.ErrClosed) {
		t.Errorf("Apply after error = %v, want ErrClosed", err)
	}
	if _, err := tr.WriteImage(context.Background(), io.Discard); !errors.Is(err, rootfs.ErrClosed) {
		t.Errorf("WriteImage after error = %v, want ErrClosed", err)
	}
}

func TestSpillRemoved(t *testing.T) {
	dir := t.TempDir()
	tr := rootfs.NewTree(rootfs.Options{TempDir: dir})
	if err := tr.Apply(context.Background(), bytes.NewReader(mkLayer(t, file("f", []byte("data"), 0o644)))); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("TempDir holds %d files after Close, want 0", len(ents))
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := rootfs.Build(ctx, []io.Reader{bytes.NewReader(mkLayer(t, file("f", nil, 0)))}, io.Discard, rootfs.Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Build(canceled) = %v, want context.Canceled", err)
	}
}

func TestBuildFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img.erofs")
	l := mkLayer(t, file("f", []byte("data"), 0o644))
	if _, err := rootfs.BuildFile(context.Background(), []io.Reader{bytes.NewReader(l)}, p, rootfs.Options{}); err != nil {
		t.Fatalf("BuildFile = %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("image mode = %v, want 0444", fi.Mode())
	}
	img, _ := os.ReadFile(p)
	if g := readBack(t, img)["f"]; g == nil || string(g.body) != "data" {
		t.Errorf("image lacks f")
	}
	// A failed build leaves neither the path nor temporary files.
	p2 := filepath.Join(filepath.Dir(p), "bad.erofs")
	if _, err := rootfs.BuildFile(context.Background(), []io.Reader{bytes.NewReader(mkLayer(t, file("../x", nil, 0)))}, p2, rootfs.Options{}); err == nil {
		t.Fatal("BuildFile(bad) = nil")
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries after a failed build, want 1", len(ents))
	}
}
