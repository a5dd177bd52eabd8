// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The benchmarks pair the server with the same work done by direct
// syscalls in the same run, so the ratio, not the absolute time, is the
// result. Run them with
//
//	go test -run='^$' -bench=. -benchtime=8192x ./pkg/vmm/virtio/fs/fuse/
//
// where 8192 iterations of 128 KiB make the 1 GiB of the sequential ones.

const (
	benchFiles    = 10000
	benchIOSize   = 128 << 10
	benchFileSize = 1 << 30
)

func benchTree(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	for i := range benchFiles {
		if err := os.WriteFile(filepath.Join(dir, "f"+itoa(i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

func benchNames() [][]byte {
	names := make([][]byte, benchFiles)
	for i := range names {
		names[i] = []byte("f" + itoa(i))
	}
	return names
}

// BenchmarkLookupGetattr looks up one of 10k files, gets its attributes
// and forgets it, per iteration: what a guest's stat of an uncached name
// costs the server. direct-stat is the host doing fstatat on the name;
// direct-openat2 adds the O_PATH open the server's confinement needs.
func BenchmarkLookupGetattr(b *testing.B) {
	dir := benchTree(b)
	names := benchNames()
	b.Run("server", func(b *testing.B) {
		s, err := New(Config{Root: dir})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		c := newClient(b, s)
		c.init()
		lookups := make([][]byte, benchFiles)
		for i, n := range names {
			lookups[i] = c.request(opLookup, RootID, cstr(string(n)))
		}
		getattr := c.request(opGetattr, 0, u32(0), u32(0), u64(0))
		forget := c.request(opForget, 0, u64(1))
		reply := make([]byte, 4096)
		b.ResetTimer()
		for i := range b.N {
			if s.Serve(lookups[i%benchFiles], reply) != OutHeaderSize+entryOutSize {
				b.Fatalf("lookup failed: %d", int32(le.Uint32(reply[4:])))
			}
			id := le.Uint64(reply[OutHeaderSize:])
			le.PutUint64(getattr[16:], id)
			if s.Serve(getattr, reply) != OutHeaderSize+attrOutSize {
				b.Fatal("getattr failed")
			}
			le.PutUint64(forget[16:], id)
			s.Serve(forget, reply)
		}
	})
	dirFD, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(dirFD)
	sNames := make([]string, len(names))
	for i, n := range names {
		sNames[i] = string(n)
	}
	b.Run("direct-stat", func(b *testing.B) {
		var st unix.Stat_t
		for i := range b.N {
			if err := unix.Fstatat(dirFD, sNames[i%benchFiles], &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct-openat2", func(b *testing.B) {
		var st unix.Stat_t
		for i := range b.N {
			fd, err := openBeneath(dirFD, sNames[i%benchFiles], unix.O_PATH, 0)
			if err != nil {
				b.Fatal(err)
			}
			if err := fstat(fd, &st); err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
		}
	})
}

// benchFile opens (creating) a file in a fresh share through the server
// and directly, and returns both.
func benchFile(b *testing.B, fill bool) (c *client, node, fh uint64, fd int) {
	b.Helper()
	dir := b.TempDir()
	// Two files made alike, so neither side overwrites blocks the other
	// allocated.
	for _, name := range []string{"big", "direct"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		if fill {
			chunk := make([]byte, 1<<20)
			for i := range chunk {
				chunk[i] = byte(i)
			}
			for range benchFileSize / len(chunk) {
				if _, err := f.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
		}
		f.Close()
	}
	path := filepath.Join(dir, "direct")
	s, err := New(Config{Root: dir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	c = newClient(b, s)
	c.init()
	e := c.lookup(RootID, "big")
	fh = c.open(e.id, unix.O_RDWR)
	fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return c, e.id, fh, fd
}

// BenchmarkSeqWrite writes 128 KiB per iteration, sequentially through a
// 1 GiB file (wrapping), through the server and with pwrite.
func BenchmarkSeqWrite(b *testing.B) {
	c, node, fh, fd := benchFile(b, false)
	data := make([]byte, benchIOSize)
	req := c.request(opWrite, node, ioBody(fh, 0, benchIOSize), data)
	reply := make([]byte, 4096)
	b.Run("server", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		for i := range b.N {
			le.PutUint64(req[InHeaderSize+8:], uint64(i*benchIOSize%benchFileSize))
			if c.s.Serve(req, reply) != OutHeaderSize+writeOutSize {
				b.Fatal("write failed")
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		for i := range b.N {
			if _, err := unix.Pwrite(fd, data, int64(i*benchIOSize%benchFileSize)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSeqRead reads 128 KiB per iteration, sequentially through a
// 1 GiB file (wrapping), through the server and with pread.
func BenchmarkSeqRead(b *testing.B) {
	c, node, fh, fd := benchFile(b, true)
	req := c.request(opRead, node, ioBody(fh, 0, benchIOSize))
	reply := make([]byte, MaxReplySize)
	buf := make([]byte, benchIOSize)
	b.Run("server", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		for i := range b.N {
			le.PutUint64(req[InHeaderSize+8:], uint64(i*benchIOSize%benchFileSize))
			if c.s.Serve(req, reply) != OutHeaderSize+benchIOSize {
				b.Fatal("read failed")
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		for i := range b.N {
			if _, err := unix.Pread(fd, buf, int64(i*benchIOSize%benchFileSize)); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same reads into a buffer 16 bytes past a page boundary, where
	// the server's reply payload starts (after the out header).
	b.Run("direct-offset16", func(b *testing.B) {
		b.SetBytes(benchIOSize)
		buf := make([]byte, benchIOSize+OutHeaderSize)[OutHeaderSize:]
		for i := range b.N {
			if _, err := unix.Pread(fd, buf, int64(i*benchIOSize%benchFileSize)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
