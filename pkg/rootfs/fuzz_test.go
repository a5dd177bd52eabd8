// SPDX-License-Identifier: Apache-2.0

package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs/erofs"
)

func fuzzSeeds(f *testing.F) {
	add := func(hs ...*tar.Header) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hs {
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(h.Linkname))
			}
			body := h.Linkname
			if h.Typeflag == tar.TypeReg {
				h.Linkname = ""
			}
			if err := tw.WriteHeader(h); err != nil {
				f.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte(body))
			}
		}
		tw.Close()
		f.Add(buf.Bytes())
	}
	add(&tar.Header{Name: "a/b/c", Typeflag: tar.TypeReg, Linkname: "hello", Mode: 0o4755})
	add(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "d/.wh..wh..opq", Typeflag: tar.TypeReg},
		&tar.Header{Name: "d/.wh.x", Typeflag: tar.TypeReg},
		&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/d"},
		&tar.Header{Name: "l/f", Typeflag: tar.TypeReg, Linkname: "via symlink"},
		&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "l/f"})
	add(&tar.Header{Name: "loop", Typeflag: tar.TypeSymlink, Linkname: "loop/.."},
		&tar.Header{Name: "loop/x", Typeflag: tar.TypeReg})
	add(&tar.Header{Name: "../x", Typeflag: tar.TypeReg})
	add(&tar.Header{Name: "c", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3},
		&tar.Header{Name: "p", Typeflag: tar.TypeFifo},
		&tar.Header{Name: "x", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b"}})
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
}

// FuzzApply applies arbitrary bytes as a layer on top of a fixed lower
// layer: it must not panic, and the tree must stay well formed (every name a
// valid component, only directories hold children, limits respected).
func FuzzApply(f *testing.F) {
	fuzzSeeds(f)
	lower := func(t *testing.T) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range []*tar.Header{
			{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "d/x", Typeflag: tar.TypeReg},
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d"},
		} {
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
		}
		tw.Close()
		return buf.Bytes()
	}
	f.Fuzz(func(t *testing.T, layer []byte) {
		tr := NewTree(Options{TempDir: t.TempDir(), MaxDataBytes: 1 << 20, MaxEntries: 1 << 12})
		defer tr.Close()
		if err := tr.Apply(context.Background(), bytes.NewReader(lower(t))); err != nil {
			t.Fatalf("Apply(lower) = %v", err)
		}
		if err := tr.Apply(context.Background(), bytes.NewReader(layer)); err != nil {
			if !strings.HasPrefix(err.Error(), "rootfs: ") {
				t.Errorf("error %q lacks the rootfs: prefix", err)
			}
			return
		}
		if tr.spillSize > 1<<20 || tr.inodes > 1<<12 {
			t.Fatalf("limits exceeded: %d bytes, %d inodes", tr.spillSize, tr.inodes)
		}
		checkTree(t, tr.root, map[*node]bool{})
	})
}

func checkTree(t *testing.T, n *node, seen map[*node]bool) {
	if !n.isDir() {
		if n.children != nil {
			t.Fatal("non-directory with children")
		}
		return
	}
	if seen[n] {
		t.Fatal("directory reachable twice")
	}
	seen[n] = true
	for name, b := range n.children {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > maxNameLen {
			t.Fatalf("bad name %q in tree", name)
		}
		if strings.HasPrefix(name, whiteoutPrefix) {
			t.Fatalf("whiteout %q left in tree", name)
		}
		checkTree(t, b.n, seen)
	}
}

// FuzzBuild builds an image from arbitrary layer bytes: when Apply accepts
// them, the writer must accept the tree too.
func FuzzBuild(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, layer []byte) {
		tr := NewTree(Options{TempDir: t.TempDir(), MaxDataBytes: 1 << 20, MaxEntries: 1 << 12})
		defer tr.Close()
		if tr.Apply(context.Background(), bytes.NewReader(layer)) != nil {
			return
		}
		st, err := tr.WriteImage(context.Background(), io.Discard)
		if err != nil {
			t.Fatalf("WriteImage after a successful Apply = %v", err)
		}
		if st.Image.ImageBytes%erofs.BlockSize != 0 {
			t.Fatalf("image of %d bytes", st.Image.ImageBytes)
		}
	})
}
