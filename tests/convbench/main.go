// SPDX-License-Identifier: Apache-2.0

// Command convbench measures root filesystem conversion: pkg/rootfs turning a
// layer tar into an EROFS image, against Debian's mkfs.erofs building an
// image of the same content, in one run (make bench). mkfs.erofs (erofs-utils
// 1.5) cannot read a tar, so its input is the layer extracted to a directory
// beforehand; the extraction is not timed, which favours the peer.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs"
)

func main() {
	mib := flag.Int("mib", 128, "approximate layer size in MiB")
	runs := flag.Int("runs", 3, "runs per converter")
	flag.Parse()
	if err := bench(*mib, *runs); err != nil {
		fmt.Fprintf(os.Stderr, "convbench: %v\n", err)
		os.Exit(1)
	}
}

func bench(mib, runs int) error {
	mkfs, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		return fmt.Errorf("the peer needs mkfs.erofs (apt-get install erofs-utils): %w", err)
	}
	dir, err := os.MkdirTemp("", "convbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	layer := filepath.Join(dir, "layer.tar")
	size, err := writeLayer(layer, int64(mib)<<20)
	if err != nil {
		return err
	}
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("tar", "-xf", layer, "-C", tree, "--same-owner", "--same-permissions").CombinedOutput(); err != nil {
		return fmt.Errorf("extract for the peer: %v: %s", err, out)
	}

	var ours, peer []time.Duration
	for i := range runs {
		f, err := os.Open(layer)
		if err != nil {
			return err
		}
		start := time.Now()
		_, err = rootfs.BuildFile(context.Background(), []io.Reader{f}, filepath.Join(dir, fmt.Sprintf("ours%d.erofs", i)), rootfs.Options{TempDir: dir})
		ours = append(ours, time.Since(start))
		f.Close()
		if err != nil {
			return err
		}
		start = time.Now()
		out, err := exec.Command(mkfs, "--quiet", filepath.Join(dir, fmt.Sprintf("peer%d.erofs", i)), tree).CombinedOutput()
		peer = append(peer, time.Since(start))
		if err != nil {
			return fmt.Errorf("mkfs.erofs: %v: %s", err, out)
		}
	}
	mo, mp := median(ours), median(peer)
	rate := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	st1, _ := os.Stat(filepath.Join(dir, "ours0.erofs"))
	st2, _ := os.Stat(filepath.Join(dir, "peer0.erofs"))
	fmt.Printf("bench rootfs-conversion (%.0f MiB tar, medians of %d): pkg/rootfs %v (%.0f MiB/s, image %.1f MiB), mkfs.erofs %v (%.0f MiB/s, image %.1f MiB), throughput ratio ours/mkfs.erofs %.2f\n",
		float64(size)/(1<<20), runs, mo.Round(time.Millisecond), rate(mo), float64(st1.Size())/(1<<20),
		mp.Round(time.Millisecond), rate(mp), float64(st2.Size())/(1<<20), rate(mo)/rate(mp))
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// writeLayer writes a layer of about size bytes: a tree of directories with
// files from empty to a few MiB, symlinks and hard links, owned by several
// users, with random contents (so neither side can compress it away).
func writeLayer(path string, size int64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	rng := rand.New(rand.NewPCG(1, 2))
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var written int64
	for d := 0; written < size; d++ {
		dir := fmt.Sprintf("d%03d", d)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mtime}); err != nil {
			return 0, err
		}
		for i := 0; i < 30 && written < size; i++ {
			n := []int{0, 100, 4095, 4097, 20000, 300000, 2 << 20}[rng.IntN(7)]
			name := fmt.Sprintf("%s/f%03d", dir, i)
			off := rng.IntN(len(data) - n + 1)
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(n), Mode: 0o644,
				Uid: 1000 + i%3, Gid: 1000, ModTime: mtime}); err != nil {
				return 0, err
			}
			if _, err := io.Copy(tw, bytes.NewReader(data[off:off+n])); err != nil {
				return 0, err
			}
			written += int64(n)
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: dir + "/link", Linkname: "f000", ModTime: mtime})
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: dir + "/hard", Linkname: dir + "/f000", ModTime: mtime})
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
