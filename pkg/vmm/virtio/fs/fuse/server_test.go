// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestNewConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("New(no root) = %v, want ErrConfig", err)
	}
	if _, err := New(Config{Root: "/nonexistent/share"}); err == nil {
		t.Errorf("New(missing root) succeeded")
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := New(Config{Root: f}); err == nil {
		t.Errorf("New(file root) succeeded")
	}
}

func TestRoundTrip(t *testing.T) {
	w := newWorld(t)
	c := w.server(t, Config{})
	defer w.check(t)

	// create, write, read back, stat
	f, fh := c.create(RootID, "hello.txt", unix.O_RDWR, 0o640)
	if f.mode != unix.S_IFREG|0o640 {
		t.Errorf("created mode %o", f.mode)
	}
	data := []byte("hello, virtio-fs")
	if n := c.write(f.id, fh, 0, data); n != uint32(len(data)) {
		t.Fatalf("wrote %d", n)
	}
	if got := c.read(f.id, fh, 0, 4096); !bytes.Equal(got, data) {
		t.Fatalf("read %q", got)
	}
	if got := c.read(f.id, fh, 7, 6); string(got) != "virtio" {
		t.Fatalf("read at 7: %q", got)
	}
	if got := c.getattr(f.id); got.size != uint64(len(data)) {
		t.Errorf("size %d", got.size)
	}
	if b, _ := os.ReadFile(filepath.Join(w.share, "hello.txt")); !bytes.Equal(b, data) {
		t.Errorf("host sees %q", b)
	}
	// FLUSH answers ENOSYS so that the guest stops sending it.
	c.fail(unix.ENOSYS, opFlush, f.id, u64(fh), u32(0), u32(0), u64(0))
	c.must(opFsync, f.id, u64(fh), u32(1), u32(0))
	p := c.must(opLseek, f.id, u64(fh), u64(3), u32(unix.SEEK_SET), u32(0))
	if le.Uint64(p) != 3 {
		t.Errorf("lseek = %d", le.Uint64(p))
	}
	c.must(opFallocate, f.id, u64(fh), u64(0), u64(8192), u32(0), u32(0))
	if got := c.getattr(f.id); got.size != 8192 {
		t.Errorf("size after fallocate %d", got.size)
	}
	c.release(opRelease, f.id, fh)
	c.fail(unix.EBADF, opRead, f.id, ioBody(fh, 0, 10))

	// setattr: truncate without a handle, chmod, times
	setattr := func(node uint64, valid uint32, size uint64, mode uint32) []byte {
		in := make([]byte, setattrInSize)
		le.PutUint32(in[0:], valid)
		le.PutUint64(in[16:], size)
		le.PutUint64(in[40:], 1234567)
		le.PutUint32(in[68:], mode)
		return c.must(opSetattr, node, in)
	}
	setattr(f.id, fattrSize|fattrMode|fattrMtime, 5, 0o600)
	st, err := os.Stat(filepath.Join(w.share, "hello.txt"))
	if err != nil || st.Size() != 5 || st.Mode() != 0o600 || st.ModTime().Unix() != 1234567 {
		t.Errorf("after setattr: %v %v", st, err)
	}

	// reopen read-only
	fh = c.open(f.id, unix.O_RDONLY)
	if got := c.read(f.id, fh, 0, 100); string(got) != "hello" {
		t.Errorf("read after truncate %q", got)
	}
	c.release(opRelease, f.id, fh)

	// mkdir, readdir, rename, rmdir
	d := c.mkdir(RootID, "dir", 0o755)
	if d.mode != unix.S_IFDIR|0o755 {
		t.Errorf("mkdir mode %o", d.mode)
	}
	for _, plus := range []bool{false, true} {
		if got := c.readdir(RootID, plus, 4096); !slices.Equal(got, []string{"dir", "hello.txt"}) {
			t.Errorf("readdir(plus=%v) = %v", plus, got)
		}
	}
	c.must(opRename, RootID, u64(d.id), cstr("hello.txt"), cstr("moved"))
	if g := c.lookup(d.id, "moved"); g.id != f.id {
		t.Errorf("renamed file is node %d, want %d", g.id, f.id)
	}
	c.fail(unix.ENOENT, opLookup, RootID, cstr("hello.txt"))
	c.must(opRename2, d.id, u64(RootID), u32(renameNoReplace), u32(0), cstr("moved"), cstr("back"))
	c.create(d.id, "x", unix.O_WRONLY, 0o644)
	c.fail(unix.ENOTEMPTY, opRmdir, RootID, cstr("dir"))
	c.must(opUnlink, d.id, cstr("x"))
	c.must(opRmdir, RootID, cstr("dir"))

	// many entries over several small READDIR requests
	want := []string{"back"}
	for i := range 200 {
		name := strings.Repeat("n", 1+i%40) + string(rune('a'+i%26)) + itoa(i)
		c.mkdir(RootID, name, 0o700)
		want = append(want, name)
	}
	slices.Sort(want)
	for _, plus := range []bool{false, true} {
		if got := c.readdir(RootID, plus, 512); !slices.Equal(got, want) {
			t.Errorf("readdir(plus=%v) of 201 entries: %d names", plus, len(got))
		}
	}

	// symlink, readlink, hard link
	l := decodeEntry(c.must(opSymlink, RootID, cstr("link"), cstr("back")))
	if l.mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("symlink mode %o", l.mode)
	}
	if got := c.must(opReadlink, l.id); string(got) != "back" {
		t.Errorf("readlink %q", got)
	}
	h := decodeEntry(c.must(opLink, RootID, u64(f.id), cstr("hard")))
	if h.id != f.id {
		t.Errorf("link node %d, want %d", h.id, f.id)
	}
	if got := c.getattr(f.id); got.ino != f.ino {
		t.Errorf("getattr after link: %+v", got)
	}
	c.must(opUnlink, RootID, cstr("hard"))

	// mknod: FIFO and whiteout allowed
	c.must(opMknod, RootID, u32(unix.S_IFIFO|0o644), u32(0), u32(0), u32(0), cstr("fifo"))
	c.must(opMknod, RootID, u32(unix.S_IFCHR), u32(0), u32(0), u32(0), cstr("whiteout"))

	// statfs, access
	if p := c.must(opStatfs, RootID); len(p) != statfsOutSize || le.Uint32(p[44:]) == 0 {
		t.Errorf("statfs %x", p)
	}
	c.must(opAccess, RootID, u32(unix.W_OK), u32(0))
	c.fail(unix.ENOSYS, opGetxattr, RootID, u32(10), u32(0), cstr("user.x"))

	// forget: the node goes when its lookups are returned
	g := c.lookup(RootID, "back")
	if g.id != f.id {
		t.Fatalf("lookup back = %d", g.id)
	}
	c.forget(f.id, 1<<40)
	c.fail(unix.ENOENT, opGetattr, f.id, u32(0), u32(0), u64(0))
	if g := c.lookup(RootID, "back"); g.id == f.id {
		t.Errorf("forgotten node id %d reused", g.id)
	}
	c.must(opDestroy, 0)
	c.fail(unix.EIO, opGetattr, RootID, u32(0), u32(0), u64(0))
}

func TestGuestOwnershipAndQuota(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	w := newWorld(t)
	c := w.server(t, Config{GuestOwnership: true, QuotaBytes: 10000})
	defer w.check(t)
	c.uid, c.gid = 1234, 5678
	f, fh := c.create(RootID, "owned", unix.O_RDWR, 0o644)
	d := c.mkdir(RootID, "d", 0o755)
	l := decodeEntry(c.must(opSymlink, RootID, cstr("l"), cstr("/x")))
	for _, e := range []entry{f, d, l} {
		if e.uid != 1234 || e.gid != 5678 {
			t.Errorf("node %d owned by %d:%d", e.id, e.uid, e.gid)
		}
	}
	var hs unix.Stat_t
	unix.Lstat(filepath.Join(w.share, "owned"), &hs)
	if hs.Uid != 1234 || hs.Gid != 5678 {
		t.Errorf("host sees %d:%d", hs.Uid, hs.Gid)
	}

	// quota: 10000 bytes in all
	c.write(f.id, fh, 0, make([]byte, 8000))
	c.fail(unix.ENOSPC, opWrite, f.id, ioBody(fh, 8000, 4000), make([]byte, 4000))
	c.write(f.id, fh, 0, make([]byte, 8000)) // overwrite: no growth
	c.fail(unix.ENOSPC, opFallocate, f.id, u64(fh), u64(0), u64(20000), u32(0), u32(0))
	in := make([]byte, setattrInSize)
	le.PutUint32(in[0:], fattrSize)
	le.PutUint64(in[16:], 100000)
	c.fail(unix.ENOSPC, opSetattr, f.id, in)
	le.PutUint64(in[16:], 1000)
	c.must(opSetattr, f.id, in)
	c.write(f.id, fh, 1000, make([]byte, 8000))
	c.must(opUnlink, RootID, cstr("owned"))
	g, gh := c.create(RootID, "other", unix.O_RDWR, 0o644)
	c.write(g.id, gh, 0, make([]byte, 9999))
	// O_APPEND writes land at the end whatever their offset says; they
	// are charged there.
	ah := c.open(g.id, unix.O_WRONLY|unix.O_APPEND)
	c.fail(unix.ENOSPC, opWrite, g.id, ioBody(ah, 0, 10), make([]byte, 10))
	c.write(g.id, ah, 0, []byte("x"))
	// Blocks past the size would escape the count.
	c.fail(unix.EOPNOTSUPP, opFallocate, g.id, u64(gh), u64(0), u64(1<<30), u32(unix.FALLOC_FL_KEEP_SIZE), u32(0))
	if p := c.must(opStatfs, RootID); le.Uint64(p[0:])*uint64(le.Uint32(p[40:])) > 10000 {
		t.Errorf("statfs reports %d blocks of %d", le.Uint64(p[0:]), le.Uint32(p[40:]))
	}
}

func TestSetuidStripped(t *testing.T) {
	w := newWorld(t)
	c := w.server(t, Config{})
	f, _ := c.create(RootID, "suid", unix.O_RDWR, 0o6755)
	d := c.mkdir(RootID, "sgid", 0o2775)
	n := decodeEntry(c.must(opMknod, RootID, u32(unix.S_IFREG|0o4755), u32(0), u32(0), u32(0), cstr("suid2")))
	if f.mode != unix.S_IFREG|0o755 || n.mode != unix.S_IFREG|0o755 {
		t.Errorf("created modes %o %o keep setuid", f.mode, n.mode)
	}
	if d.mode != unix.S_IFDIR|0o2775 {
		t.Errorf("setgid directory mode %o", d.mode)
	}
	// The host process's umask does not narrow the guest's modes.
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	if e, _ := c.create(RootID, "open", unix.O_RDWR, 0o666); e.mode != unix.S_IFREG|0o666 {
		t.Errorf("create 0666 under umask 077: %o", e.mode)
	}
	if e := c.mkdir(RootID, "opendir", 0o777); e.mode != unix.S_IFDIR|0o777 {
		t.Errorf("mkdir 0777 under umask 077: %o", e.mode)
	}
	sa := make([]byte, setattrInSize)
	le.PutUint32(sa[0:], fattrMode)
	le.PutUint32(sa[68:], 0o4755)
	if p := c.must(opSetattr, f.id, sa); le.Uint32(p[16+60:]) != unix.S_IFREG|0o755 {
		t.Errorf("chmod 4755 gave %o", le.Uint32(p[16+60:]))
	}
	st, _ := os.Stat(filepath.Join(w.share, "suid"))
	if st.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		t.Errorf("host sees %v", st.Mode())
	}
	w.check(t)
}

func TestReadOnly(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(filepath.Join(w.share, "file"), []byte("data"), 0o644)
	os.Mkdir(filepath.Join(w.share, "dir"), 0o755)
	before := snapshot(t, w.share)
	c := w.server(t, Config{ReadOnly: true})
	f := c.lookup(RootID, "file")
	d := c.lookup(RootID, "dir")

	fh := c.open(f.id, unix.O_RDONLY)
	if got := c.read(f.id, fh, 0, 100); string(got) != "data" {
		t.Errorf("read %q", got)
	}
	for _, flags := range []uint32{unix.O_WRONLY, unix.O_RDWR, unix.O_RDONLY | unix.O_TRUNC, unix.O_WRONLY | unix.O_APPEND} {
		c.fail(unix.EROFS, opOpen, f.id, u32(flags), u32(0))
	}
	sa := make([]byte, setattrInSize)
	le.PutUint32(sa[0:], fattrSize)
	ro := []struct {
		op   uint32
		node uint64
		body [][]byte
	}{
		{opCreate, RootID, createBody(unix.O_RDONLY, 0o644, "new")},
		{opMkdir, RootID, [][]byte{u32(0o755), u32(0), cstr("new")}},
		{opMknod, RootID, [][]byte{u32(unix.S_IFREG | 0o644), u32(0), u32(0), u32(0), cstr("new")}},
		{opSymlink, RootID, [][]byte{cstr("new"), cstr("file")}},
		{opLink, RootID, [][]byte{u64(f.id), cstr("new")}},
		{opUnlink, RootID, [][]byte{cstr("file")}},
		{opRmdir, RootID, [][]byte{cstr("dir")}},
		{opRename, RootID, [][]byte{u64(d.id), cstr("file"), cstr("new")}},
		{opRename2, RootID, [][]byte{u64(RootID), u32(0), u32(0), cstr("file"), cstr("new")}},
		{opSetattr, f.id, [][]byte{sa}},
		{opWrite, f.id, [][]byte{ioBody(fh, 0, 4), []byte("evil")}},
		{opFallocate, f.id, [][]byte{u64(fh), u64(0), u64(1 << 20), u32(0), u32(0)}},
		{opSetxattr, f.id, [][]byte{u32(1), u32(0), cstr("user.x"), []byte("v")}},
		{opAccess, f.id, [][]byte{u32(unix.W_OK), u32(0)}},
	}
	for _, r := range ro {
		c.fail(unix.EROFS, r.op, r.node, r.body...)
	}
	c.must(opAccess, f.id, u32(unix.R_OK), u32(0))
	if after := snapshot(t, w.share); after != before {
		t.Errorf("read-only share changed:\n%s\nwas\n%s", after, before)
	}
	w.check(t)
}

// snapshot describes every entry beneath dir: name, mode, size, contents.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(path + " " + info.Mode().String() + " " + itoa(int(info.Size())) + " " + info.ModTime().String())
		if info.Mode().IsRegular() {
			data, _ := os.ReadFile(path)
			b.Write(data)
		}
		b.WriteByte('\n')
		return nil
	})
	return b.String()
}

func TestLimits(t *testing.T) {
	w := newWorld(t)
	for _, n := range []string{"a", "b", "c", "d"} {
		os.WriteFile(filepath.Join(w.share, n), nil, 0o644)
	}
	c := w.server(t, Config{MaxNodes: 2, MaxHandles: 1})
	a := c.lookup(RootID, "a")
	c.lookup(RootID, "a") // the same inode: no new node
	c.lookup(RootID, "b")
	c.fail(unix.ENFILE, opLookup, RootID, cstr("c"))
	c.fail(unix.ENFILE, opCreate, RootID, createBody(unix.O_RDWR, 0o644, "e")...)
	if _, err := os.Stat(filepath.Join(w.share, "e")); err == nil {
		// Creating happened before the node table refused it: the file
		// may stay, but it must be inside the share.
		t.Logf("refused CREATE left its file inside the share")
	}
	c.forget(a.id, 2)
	c.lookup(RootID, "c")
	c.open(c.lookup(RootID, "c").id, unix.O_RDONLY)
	c.fail(unix.ENFILE, opOpendir, RootID, u32(0), u32(0))
	w.check(t)
}

// TestCloseReleasesFDs checks that Close leaves the process with the fds it
// had before New, whatever the guest held open.
func TestCloseReleasesFDs(t *testing.T) {
	w := newWorld(t)
	for i := range 20 {
		os.WriteFile(filepath.Join(w.share, "f"+itoa(i)), []byte("x"), 0o644)
	}
	before := countFDs(t)
	s, err := New(Config{Root: w.share})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s)
	c.init()
	for i := range 20 {
		e := c.lookup(RootID, "f"+itoa(i))
		c.open(e.id, unix.O_RDONLY)
	}
	c.must(opOpendir, RootID, u32(0), u32(0))
	c.readdir(RootID, true, 4096)
	if countFDs(t) < before+40 {
		t.Errorf("fds %d, want at least %d", countFDs(t), before+40)
	}
	s.Reset()
	c.fail(unix.EIO, opGetattr, RootID, u32(0), u32(0), u64(0))
	c.init()
	c.lookup(RootID, "f1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if after := countFDs(t); after != before {
		t.Errorf("fds after Close %d, before New %d", after, before)
	}
	c.fail(unix.EIO, opGetattr, RootID, u32(0), u32(0), u64(0))
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
