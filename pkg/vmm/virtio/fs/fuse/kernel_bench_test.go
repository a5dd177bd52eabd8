// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel-client benchmarks go through a /dev/fuse mount of the server,
// so each operation pays the host kernel's FUSE client and a round trip
// through /dev/fuse, roughly what a guest pays minus the virtqueue and VM
// exits; "direct" is the same call on the share itself.

// BenchmarkKernelStat stats one of 10k files per iteration with caching
// off (every stat is a LOOKUP).
func BenchmarkKernelStat(b *testing.B) {
	w := newWorld(b)
	for i := range benchFiles {
		if err := os.WriteFile(filepath.Join(w.share, "f"+itoa(i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	mnt, _ := mountKernel(b, w, Config{CacheTimeout: -1})
	for _, side := range []struct{ name, dir string }{{"fuse", mnt}, {"direct", w.share}} {
		paths := make([]string, benchFiles)
		for i := range paths {
			paths[i] = filepath.Join(side.dir, "f"+itoa(i))
		}
		b.Run(side.name, func(b *testing.B) {
			var st unix.Stat_t
			for i := range b.N {
				if err := unix.Lstat(paths[i%benchFiles], &st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKernelRead reads 128 KiB per iteration from a 256 MiB file
// opened O_DIRECT on the mount, so every read reaches the server, beside
// buffered pread of the same file on the host (in its page cache).
func BenchmarkKernelRead(b *testing.B) {
	const size = 256 << 20
	w := newWorld(b)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i)
	}
	if err := os.WriteFile(filepath.Join(w.share, "big"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	mnt, _ := mountKernel(b, w, Config{})
	buf := make([]byte, benchIOSize)
	for _, side := range []struct {
		name  string
		path  string
		flags int
	}{{"fuse", filepath.Join(mnt, "big"), unix.O_DIRECT}, {"direct", filepath.Join(w.share, "big"), 0}} {
		fd, err := unix.Open(side.path, unix.O_RDONLY|unix.O_CLOEXEC|side.flags, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(side.name, func(b *testing.B) {
			b.SetBytes(benchIOSize)
			for i := range b.N {
				if n, err := unix.Pread(fd, buf, int64(i*benchIOSize%size)); err != nil || n != benchIOSize {
					b.Fatalf("pread: %d %v", n, err)
				}
			}
		})
		unix.Close(fd)
	}
}

// BenchmarkKernelWrite writes 128 KiB per iteration into a 256 MiB file
// opened O_DIRECT on the mount, beside buffered pwrite on the host.
func BenchmarkKernelWrite(b *testing.B) {
	const size = 256 << 20
	w := newWorld(b)
	for _, name := range []string{"big", "direct"} {
		if err := os.WriteFile(filepath.Join(w.share, name), make([]byte, size), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	mnt, _ := mountKernel(b, w, Config{})
	buf := make([]byte, benchIOSize)
	for _, side := range []struct {
		name  string
		path  string
		flags int
	}{{"fuse", filepath.Join(mnt, "big"), unix.O_DIRECT}, {"direct", filepath.Join(w.share, "direct"), 0}} {
		fd, err := unix.Open(side.path, unix.O_WRONLY|unix.O_CLOEXEC|side.flags, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(side.name, func(b *testing.B) {
			b.SetBytes(benchIOSize)
			for i := range b.N {
				if n, err := unix.Pwrite(fd, buf, int64(i*benchIOSize%size)); err != nil || n != benchIOSize {
					b.Fatalf("pwrite: %d %v", n, err)
				}
			}
		})
		unix.Close(fd)
	}
}
