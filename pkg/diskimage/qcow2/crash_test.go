// SPDX-License-Identifier: Apache-2.0

package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// recorder is a file that logs every write and sync it passes on.
type recorder struct {
	*os.File
	ops []fileOp
}

// fileOp is one logged write, or a sync when data is nil.
type fileOp struct {
	off  int64
	data []byte
}

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.ops = append(r.ops, fileOp{off, bytes.Clone(p)})
	return r.File.WriteAt(p, off)
}

func (r *recorder) Sync() error {
	r.ops = append(r.ops, fileOp{})
	return r.File.Sync()
}

// apply returns base with the writes of ops applied.
func apply(base []byte, ops []fileOp) []byte {
	b := bytes.Clone(base)
	for _, op := range ops {
		if op.data == nil {
			continue
		}
		if end := int(op.off) + len(op.data); end > len(b) {
			b = append(b, make([]byte, end-len(b))...)
		}
		copy(b[op.off:], op.data)
	}
	return b
}

// checkState runs qemu-img check on b: errors fail the test, leaks
// (exit status 3) do not.
func checkState(t *testing.T, dir, what string, b []byte) {
	t.Helper()
	path := filepath.Join(dir, "state.qcow2")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "check", "-f", "qcow2", path).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("%s: qemu-img check: %v\n%s", what, err, out)
	}
}

// TestCrashConsistency records the file operations of a write workload
// and checks the image a crash would leave at many points of it: after
// any prefix of the writes (a process crash), and after all writes before
// a sync plus a random subset of the writes since (a host crash, where
// the page cache may have written back any of them). qemu-img check must
// find at most leaked clusters in each.
//
// The workload uses 512-byte clusters, so it overwrites compressed
// clusters, allocates L2 tables and refcount blocks, and grows the
// refcount table.
func TestCrashConsistency(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw, path := filepath.Join(dir, "base.raw"), filepath.Join(dir, "base.qcow2")
	data := make([]byte, 16<<20)
	for i := range 1 << 20 {
		data[i] = byte(i / 700)
	}
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512", raw, path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	base, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{File: f}
	img, err := open(rec, uint64(len(base)), false)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	p := make([]byte, 3000)
	for i := range 40 { // into compressed, unallocated and new clusters
		off := r.IntN(3 << 20)
		if _, err := img.WriteAt(p[:1+r.IntN(len(p))], int64(off)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if err := img.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	big := make([]byte, 1<<20)
	for off := 4 << 20; off < 12<<20; off += len(big) { // grows the refcount table
		if _, err := img.WriteAt(big, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	ops := rec.ops
	t.Logf("%d file operations", len(ops))
	if final := apply(base, ops); binary.BigEndian.Uint32(final[hdrRefTableSize:]) < 2 {
		t.Fatalf("the workload did not grow the refcount table")
	}

	// Process crash: prefixes. Every sync boundary, the first writes one
	// by one, and evenly spaced points between.
	points := map[int]bool{len(ops): true}
	for i := range min(len(ops), 60) {
		points[i] = true
	}
	var syncs []int
	for i, op := range ops {
		if op.data == nil {
			syncs = append(syncs, i)
		}
	}
	for n, i := range syncs {
		if n%(len(syncs)/50+1) == 0 {
			points[i] = true
			points[min(i+2, len(ops))] = true
		}
	}
	for i := 0; i < len(ops); i += len(ops)/50 + 1 {
		points[i] = true
	}
	cur, done := base, 0
	for k := range len(ops) + 1 {
		if points[k] {
			cur, done = apply(cur, ops[done:k]), k
			checkState(t, dir, "prefix of "+strconv.Itoa(k)+" operations", cur)
		}
	}

	// Host crash: everything before a sync, any subset of what follows
	// up to the next sync.
	for n, s := range syncs {
		if n%max(1, len(syncs)/25) != 0 {
			continue
		}
		next := len(ops)
		if n+1 < len(syncs) {
			next = syncs[n+1]
		}
		for range 2 {
			var subset []fileOp
			for _, op := range ops[s+1 : next] {
				if r.IntN(2) == 0 {
					subset = append(subset, op)
				}
			}
			checkState(t, dir, "subset after sync "+strconv.Itoa(n), apply(apply(base, ops[:s]), subset))
		}
	}
}
