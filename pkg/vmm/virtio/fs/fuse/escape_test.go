// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// badNames are names a hostile guest may send where one component is
// expected.
var badNames = []string{
	"", ".", "..", "../sentinel", "../../etc/passwd", "a/b", "/", "/etc/passwd",
	"share/../../sentinel", strings.Repeat("x", 256),
}

// TestBadNames sends every name-carrying request with names that are not
// one component; each must fail and leave the host untouched.
func TestBadNames(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(filepath.Join(w.share, "file"), []byte("in share"), 0o644)
	os.Mkdir(filepath.Join(w.share, "dir"), 0o755)
	c := w.server(t, Config{})
	f := c.lookup(RootID, "file")
	d := c.lookup(RootID, "dir")
	for _, name := range badNames {
		bodies := []struct {
			op   uint32
			node uint64
			body [][]byte
		}{
			{opLookup, RootID, [][]byte{cstr(name)}},
			{opLookup, d.id, [][]byte{cstr(name)}},
			{opMkdir, RootID, [][]byte{u32(0o755), u32(0), cstr(name)}},
			{opMknod, RootID, [][]byte{u32(unix.S_IFREG | 0o644), u32(0), u32(0), u32(0), cstr(name)}},
			{opCreate, RootID, createBody(unix.O_RDWR|unix.O_TRUNC, 0o644, name)},
			{opSymlink, RootID, [][]byte{cstr(name), cstr("file")}},
			{opLink, RootID, [][]byte{u64(f.id), cstr(name)}},
			{opUnlink, d.id, [][]byte{cstr(name)}},
			{opRmdir, d.id, [][]byte{cstr(name)}},
			{opRename, RootID, [][]byte{u64(RootID), cstr("file"), cstr(name)}},
			{opRename, d.id, [][]byte{u64(RootID), cstr(name), cstr("stolen")}},
			{opRename2, RootID, [][]byte{u64(d.id), u32(renameExchange), u32(0), cstr("file"), cstr(name)}},
		}
		for _, b := range bodies {
			if e, _ := c.do(b.op, b.node, b.body...); e == 0 {
				t.Errorf("op %d with name %q succeeded", b.op, name)
			}
		}
	}
	// A name with no NUL terminator, and one with bytes after the NUL
	// that would be an escape if the NUL were ignored.
	c.fail(unix.EINVAL, opLookup, RootID, []byte("file"))
	c.fail(unix.ENOENT, opLookup, RootID, []byte("nofile\x00/../sentinel\x00"))
	if c.s.Metrics().BadNames.Load() == 0 {
		t.Errorf("no bad names counted")
	}
	if _, err := os.Stat(filepath.Join(w.share, "file")); err != nil {
		t.Errorf("file inside share gone: %v", err)
	}
	w.check(t)
}

// TestSymlinkEscape plants symlinks pointing outside the share, by the
// guest (SYMLINK) and by the host, and tries every way through them.
func TestSymlinkEscape(t *testing.T) {
	w := newWorld(t)
	// Host-made links, relative and absolute, to the sentinel file and to
	// the outside directory.
	for name, target := range map[string]string{
		"hostrel":    "../sentinel",
		"hostabs":    w.sentinel,
		"hostdir":    "../outside",
		"hostdirabs": w.outside,
		"hostroot":   "/",
	} {
		if err := os.Symlink(target, filepath.Join(w.share, name)); err != nil {
			t.Fatal(err)
		}
	}
	c := w.server(t, Config{})
	for _, target := range []string{"../sentinel", w.sentinel, "../outside", w.outside, "/", "/proc/self/root", "/proc/self/fd/3"} {
		name := "g" + itoa(len(target)) + strings.ReplaceAll(target, "/", "_")
		e := decodeEntry(c.must(opSymlink, RootID, cstr(name), cstr(target)))
		if got := string(c.must(opReadlink, e.id)); got != target {
			t.Errorf("readlink %q = %q", name, got)
		}
	}
	ents, _ := os.ReadDir(w.share)
	for _, de := range ents {
		name := de.Name()
		l := c.lookup(RootID, name)
		if l.mode&unix.S_IFMT != unix.S_IFLNK {
			t.Fatalf("lookup %q gave mode %o: followed the link", name, l.mode)
		}
		// Through the link as a directory.
		c.fail(unix.ENOTDIR, opLookup, l.id, cstr("sentinel"))
		c.fail(unix.ENOTDIR, opMkdir, l.id, u32(0o755), u32(0), cstr("x"))
		c.fail(unix.ENOTDIR, opCreate, l.id, createBody(unix.O_RDWR, 0o644, "x")...)
		c.fail(unix.ENOTDIR, opMknod, l.id, u32(unix.S_IFREG|0o644), u32(0), u32(0), u32(0), cstr("x"))
		c.fail(unix.ENOTDIR, opSymlink, l.id, cstr("x"), cstr("y"))
		c.fail(unix.ENOTDIR, opOpendir, l.id, u32(0), u32(0))
		c.fail(unix.ENOTDIR, opRename, RootID, u64(l.id), cstr(name), cstr("x"))
		c.fail(unix.ENOTDIR, opLink, l.id, u64(l.id), cstr("x"))
		// As a file.
		for _, flags := range []uint32{unix.O_RDONLY, unix.O_RDWR, unix.O_WRONLY | unix.O_TRUNC} {
			c.fail(unix.ENXIO, opOpen, l.id, u32(flags), u32(0))
		}
		// CREATE on the link name must not create or truncate its
		// target.
		if e, _ := c.do(opCreate, RootID, createBody(unix.O_RDWR|unix.O_TRUNC, 0o644, name)...); e == 0 {
			t.Errorf("CREATE over symlink %q succeeded", name)
		}
		if e, _ := c.do(opCreate, RootID, createBody(unix.O_RDWR|unix.O_EXCL, 0o644, name)...); e != unix.EEXIST {
			t.Errorf("CREATE O_EXCL over symlink %q: %v", name, e)
		}
		// Attributes are those of the link; setting them never reaches
		// the target.
		sa := make([]byte, setattrInSize)
		le.PutUint32(sa[0:], fattrSize)
		c.fail(unix.EINVAL, opSetattr, l.id, sa)
		le.PutUint32(sa[0:], fattrMode)
		le.PutUint32(sa[68:], 0o777)
		c.fail(unix.EOPNOTSUPP, opSetattr, l.id, sa)
		le.PutUint32(sa[0:], fattrMtime)
		le.PutUint64(sa[40:], 42)
		c.must(opSetattr, l.id, sa)
		// Hard-linking the link links the link, not its target.
		h := decodeEntry(c.must(opLink, RootID, u64(l.id), cstr(name+".hard")))
		if h.mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("hard link of %q has mode %o", name, h.mode)
		}
		// Renaming a link and replacing it only moves the link.
		c.must(opRename, RootID, u64(RootID), cstr(name+".hard"), cstr(name+".moved"))
		c.must(opUnlink, RootID, cstr(name+".moved"))
	}
	// A directory must not be reachable through the link via READDIRPLUS
	// either: the link is listed, never entered.
	for _, n := range c.readdir(RootID, true, 4096) {
		if n == "sentinel" || n == "outside" {
			t.Errorf("readdirplus listed %q from outside", n)
		}
	}
	w.check(t)
}

// TestRenameEscape tries to move entries out of and into the share.
func TestRenameEscape(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(filepath.Join(w.share, "file"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(w.share, "dir"), 0o755)
	c := w.server(t, Config{})
	f := c.lookup(RootID, "file")
	d := c.lookup(RootID, "dir")
	for _, nd := range []uint64{0, 999, 1 << 63, f.id} {
		if e, _ := c.do(opRename, RootID, u64(nd), cstr("file"), cstr("x")); e == 0 {
			t.Errorf("rename into node %d succeeded", nd)
		}
	}
	// The root has no name in any node; renaming the directory over its
	// parent or itself into its child fails on the host.
	c.fail(unix.EINVAL, opRename, RootID, u64(d.id), cstr("dir"), cstr("sub"))
	c.fail(unix.EINVAL, opRename2, RootID, u64(RootID), u32(4), u32(0), cstr("file"), cstr("w"))
	w.check(t)
}

// TestLinkEscape hard-links node ids this server never gave out, and ids
// from another server's share.
func TestLinkEscape(t *testing.T) {
	w := newWorld(t)
	other := newWorld(t)
	os.WriteFile(filepath.Join(other.share, "theirs"), []byte("other share"), 0o644)
	os.WriteFile(filepath.Join(w.share, "mine"), []byte("mine"), 0o644)
	oc := other.server(t, Config{})
	theirs := oc.lookup(RootID, "theirs")
	oc.lookup(RootID, "theirs")
	oc.lookup(RootID, "theirs")
	c := w.server(t, Config{})
	for _, id := range []uint64{0, theirs.id + 100, 1 << 62, ^uint64(0)} {
		c.fail(unix.ENOENT, opLink, RootID, u64(id), cstr("stolen"))
	}
	// The same id number here is this share's node, never the other's.
	m := c.lookup(RootID, "mine")
	if m.id != theirs.id {
		t.Skipf("ids differ (%d, %d)", m.id, theirs.id)
	}
	c.must(opLink, RootID, u64(theirs.id), cstr("linked"))
	if b, _ := os.ReadFile(filepath.Join(w.share, "linked")); string(b) != "mine" {
		t.Errorf("linked %q", b)
	}
	c.fail(unix.EPERM, opLink, RootID, u64(RootID), cstr("rootlink"))
	w.check(t)
	other.check(t)
}

// TestDeviceNodes checks that no host device can be created or opened
// through the share.
func TestDeviceNodes(t *testing.T) {
	w := newWorld(t)
	c := w.server(t, Config{})
	mem := uint32(1<<8 | 1) // /dev/mem, 1:1
	c.fail(unix.EPERM, opMknod, RootID, u32(unix.S_IFCHR|0o666), u32(mem), u32(0), u32(0), cstr("mem"))
	c.fail(unix.EPERM, opMknod, RootID, u32(unix.S_IFBLK|0o666), u32(8<<8), u32(0), u32(0), cstr("sda"))
	c.fail(unix.EPERM, opMknod, RootID, u32(0o666), u32(0), u32(0), u32(0), cstr("typeless"))
	fifo := decodeEntry(c.must(opMknod, RootID, u32(unix.S_IFIFO|0o666), u32(0), u32(0), u32(0), cstr("fifo")))
	c.fail(unix.ENXIO, opOpen, fifo.id, u32(unix.O_RDONLY), u32(0))
	if os.Geteuid() == 0 {
		// A device node the host left in the share is not opened either.
		if err := unix.Mknod(filepath.Join(w.share, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err == nil {
			n := c.lookup(RootID, "null")
			c.fail(unix.ENXIO, opOpen, n.id, u32(unix.O_RDWR), u32(0))
			sa := make([]byte, setattrInSize)
			le.PutUint32(sa[0:], fattrSize)
			c.fail(unix.EINVAL, opSetattr, n.id, sa)
		}
	}
	w.check(t)
}
