// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReaddirWhileRemoving reads a large directory the way the guest's
// FUSE client does under rm -rf: each READDIR continues from the last entry
// the guest consumed, which can lie inside the previous reply, and entries
// are unlinked between the requests. Every entry must be returned once.
//
// As root the share is a ramfs, whose directory offsets are positions (as
// tmpfs's were before Linux 6.6): a seek after removals skips live entries.
func TestReaddirWhileRemoving(t *testing.T) {
	w := newWorld(t)
	if os.Geteuid() == 0 {
		if err := unix.Mount("ramfs", w.share, "ramfs", 0, "mode=0755"); err == nil {
			t.Cleanup(func() { unix.Unmount(w.share, unix.MNT_DETACH) })
		} else {
			t.Logf("no ramfs (%v): the share keeps the host's file system", err)
		}
	}
	const n = 700
	dir := filepath.Join(w.share, "many")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := w.server(t, Config{})
	defer w.check(t)
	d := c.lookup(RootID, "many")
	fh := le.Uint64(c.must(opOpendir, d.id, u32(0), u32(0)))
	seen := map[string]int{}
	var off uint64
	for round := 0; ; round++ {
		p := c.must(opReaddir, d.id, ioBody(fh, off, 4096))
		if len(p) == 0 {
			break
		}
		// Consume only part of the reply (as a guest with a small
		// getdents buffer does) and remove what was consumed.
		consumed := 0
		for len(p) > 0 && consumed < 40 {
			nl := int(le.Uint32(p[16:]))
			name := string(p[direntSize : direntSize+nl])
			off = le.Uint64(p[8:])
			p = p[direntLen(nl):]
			consumed++
			if name == "." || name == ".." {
				continue
			}
			seen[name]++
			c.must(opUnlink, d.id, cstr(name))
		}
		if round > 10*n {
			t.Fatal("readdir does not end")
		}
	}
	c.release(opReleasedir, d.id, fh)
	for i := range n {
		if name := fmt.Sprintf("f%03d", i); seen[name] != 1 {
			t.Errorf("%s returned %d times", name, seen[name])
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("%d entries left after removing every one read", len(ents))
	}
	c.must(opRmdir, RootID, cstr("many"))
}
