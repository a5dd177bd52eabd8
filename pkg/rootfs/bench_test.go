// SPDX-License-Identifier: Apache-2.0

package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs"
)

// synthLayer returns a deterministic layer shaped like a distribution
// image: 200 directories, 6000 files (70% under 4 KiB, 29% 4 to 64 KiB,
// 1% 1 to 4 MiB), 500 symlinks, about 190 MiB of tar. The same
// generator feeds the format comparison in format_bench.md.
func synthLayer(tb testing.TB) []byte {
	r := rand.New(rand.NewPCG(42, 42))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	put := func(h *tar.Header, body []byte) {
		h.ModTime = mt
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if len(body) > 0 {
			tw.Write(body)
		}
	}
	blob := make([]byte, 4<<20)
	for i := range blob {
		blob[i] = byte(r.Uint32())
	}
	for d := range 200 {
		put(&tar.Header{Name: fmt.Sprintf("usr/d%03d/", d), Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	for i := range 6000 {
		var n int
		switch p := r.IntN(100); {
		case p < 70:
			n = r.IntN(4096)
		case p < 99:
			n = 4096 + r.IntN(60<<10)
		default:
			n = 1<<20 + r.IntN(3<<20)
		}
		off := r.IntN(len(blob) - n + 1)
		put(&tar.Header{Name: fmt.Sprintf("usr/d%03d/file-%05d.so", i%200, i), Typeflag: tar.TypeReg,
			Mode: 0o644, Size: int64(n)}, blob[off:off+n])
	}
	for i := range 500 {
		put(&tar.Header{Name: fmt.Sprintf("usr/d%03d/link-%05d", i%200, i), Typeflag: tar.TypeSymlink,
			Linkname: fmt.Sprintf("file-%05d.so", i), Mode: 0o777}, nil)
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkBuild measures conversion throughput (bytes of layer tar per
// second) of the EROFS path, writing to io.Discard; the image size is
// reported as image-bytes.
func BenchmarkBuild(b *testing.B) {
	layer := synthLayer(b)
	b.SetBytes(int64(len(layer)))
	dir := b.TempDir()
	var st rootfs.Stats
	for b.Loop() {
		var err error
		st, err = rootfs.Build(context.Background(), []io.Reader{bytes.NewReader(layer)}, io.Discard, rootfs.Options{TempDir: dir})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Image.ImageBytes), "image-bytes")
	b.ReportMetric(float64(len(layer)), "tar-bytes")
}
