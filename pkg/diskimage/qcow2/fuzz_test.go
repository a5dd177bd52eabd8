// SPDX-License-Identifier: Apache-2.0

package qcow2

import (
	"bytes"
	"errors"
	"io"
	"runtime/metrics"
	"testing"
)

// memFile is an in-memory file: fuzzing stays fast, without syscalls or
// fsyncs. It fails the test on an access no image can justify.
type memFile struct {
	t    *testing.T
	data []byte
}

// maxAccess bounds one read or write: a compressed cluster's input (two
// 2 MiB clusters and a sector), or a whole refcount table.
const maxAccess = maxRefTableBytes

func (m *memFile) check(op string, n int, off int64) {
	if off < 0 || off >= maxHostOffset || n > maxAccess {
		m.t.Fatalf("%s of %d bytes at %d", op, n, off)
	}
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.check("read", len(p), off)
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.check("write", len(p), off)
	if end := int(off) + len(p); end > len(m.data) {
		m.data = append(m.data, make([]byte, end-len(m.data))...)
	}
	return copy(m.data[off:], p), nil
}

func (m *memFile) Sync() error  { return nil }
func (m *memFile) Close() error { return nil }

// fuzzReadCap bounds how much of the virtual disk FuzzOpen reads from the
// start (it also reads the last 64 KiB).
const fuzzReadCap = 1 << 20

// FuzzOpen opens arbitrary bytes as an image, read-only and read-write,
// reads the disk and writes three sectors. It must never panic; Open must
// allocate no more than a small multiple of the file size plus a cluster
// buffer; reads and writes of the file must stay bounded; errors must be of
// the documented kinds; a sector written must read back; and the file must
// grow only by what the writes need.
//
// The seed corpus in testdata/fuzz/FuzzOpen holds small images made by
// qemu-img: versions 2 and 3, 512-byte and 1 KiB clusters, compressed and
// zero clusters.
func FuzzOpen(f *testing.F) {
	f.Add([]byte("QFI\xfb"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, ro := range []bool{true, false} {
			m := &memFile{t: t, data: bytes.Clone(data)}
			fuzzOne(t, m, ro)
			// Three clusters of data, three L2 tables, a few refcount
			// blocks and the file's last partial cluster, at most
			// 2 MiB each; so few clusters never grow the refcount table.
			if limit := len(data) + 16<<21; len(m.data) > limit {
				t.Fatalf("file grew from %d to %d bytes", len(data), len(m.data))
			}
		}
	})
}

// allocated returns the bytes allocated on the heap so far, without
// stopping the world as runtime.ReadMemStats does.
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func fuzzOne(t *testing.T, m *memFile, ro bool) {
	before := allocated()
	img, err := open(m, uint64(len(m.data)), ro)
	if alloc := allocated() - before; alloc > uint64(8*len(m.data))+4<<20 {
		t.Fatalf("Open(ro=%v) of %d bytes allocated %d bytes", ro, len(m.data), alloc)
	}
	if err != nil {
		for _, kind := range []error{ErrNotImage, ErrCorrupt, ErrUnsupported, ErrMarkedCorrupt, ErrDirty} {
			if errors.Is(err, kind) {
				return
			}
		}
		t.Fatalf("Open(ro=%v) = %v, not a documented error", ro, err)
	}
	defer func() {
		if err := img.Close(); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Close() = %v", err)
		}
	}()
	size := img.Size()
	p := make([]byte, 64<<10)
	readAt := func(off uint64) {
		if _, err := img.ReadAt(p, int64(off)); err != nil && err != io.EOF && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadAt(%d) = %v", off, err)
		}
	}
	for off := uint64(0); off < min(size, fuzzReadCap); off += uint64(len(p)) {
		readAt(off)
	}
	if size > uint64(len(p)) {
		readAt(size - uint64(len(p)))
	}
	if ro || size < 512 {
		return
	}
	for i, off := range []uint64{0, size / 2 &^ 511, size - 512} {
		w := bytes.Repeat([]byte{byte(i + 1)}, 512)
		if _, err := img.WriteAt(w, int64(off)); err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBroken) {
				t.Fatalf("WriteAt(%d) = %v", off, err)
			}
			continue
		}
		got := make([]byte, 512)
		if _, err := img.ReadAt(got, int64(off)); err != nil || !bytes.Equal(got, w) {
			t.Fatalf("ReadAt(%d) after WriteAt = %v, data equal %v", off, err, bytes.Equal(got, w))
		}
	}
	if err := img.Sync(); err != nil && !errors.Is(err, ErrBroken) {
		t.Fatalf("Sync() = %v", err)
	}
}
