// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// mountKernel mounts a server for w's share through /dev/fuse, so the host
// kernel's FUSE client (the same client code virtiofs uses in a guest,
// negotiating down to ProtoMinor) drives it. It skips the test where
// /dev/fuse or mounting is unavailable. The mount is detached at cleanup.
func mountKernel(t testing.TB, w *world, cfg Config) (mnt string, s *Server) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	cfg.Root = w.share
	s, err = New(cfg)
	if err != nil {
		unix.Close(dev)
		t.Fatal(err)
	}
	mnt = t.TempDir()
	// The test's file calls on the mount block in the kernel until this
	// process's server goroutine answers. A stop-the-world (the garbage
	// collector's) that starts meanwhile cannot preempt the blocked
	// caller and parks the server: a deadlock seen in CI. No GC while
	// the mount lives.
	gc := debug.SetGCPercent(-1)
	t.Cleanup(func() { debug.SetGCPercent(gc) })
	// default_permissions and allow_other, as virtiofs mounts.
	opts := "fd=" + strconv.Itoa(dev) + ",rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other"
	if err := unix.Mount("msbfs", mnt, "fuse", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(dev)
		s.Close()
		t.Skipf("mount fuse: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		req := make([]byte, MaxRequestSize+4096)
		reply := make([]byte, MaxReplySize)
		for {
			n, err := unix.Read(dev, req)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOENT) {
				continue // interrupted, or a request the kernel withdrew
			}
			if err != nil {
				return // ENODEV: unmounted
			}
			if m := s.Serve(req[:n], reply); m > 0 {
				unix.Write(dev, reply[:m])
			}
		}
	}()
	t.Cleanup(func() {
		unix.Unmount(mnt, unix.MNT_DETACH)
		// Aborting the connection through fusectl is not needed: once
		// detached and idle, closing our end ends it.
		unix.Close(dev)
		wg.Wait()
		s.Close()
	})
	return mnt, s
}

// TestKernelClient drives the server with the Linux FUSE client through
// ordinary file system calls.
func TestKernelClient(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(filepath.Join(w.share, "existing"), []byte("from the host"), 0o644)
	os.Symlink("../sentinel", filepath.Join(w.share, "hostlink"))
	mnt, s := mountKernel(t, w, Config{})
	p := func(name string) string { return filepath.Join(mnt, name) }
	h := func(name string) string { return filepath.Join(w.share, name) }

	if b, err := os.ReadFile(p("existing")); err != nil || string(b) != "from the host" {
		t.Fatalf("read existing: %q %v", b, err)
	}
	big := make([]byte, 3<<20+123)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := os.WriteFile(p("big"), big, 0o640); err != nil {
		t.Fatalf("write big: %v", err)
	}
	if b, _ := os.ReadFile(h("big")); !bytes.Equal(b, big) {
		t.Fatalf("host sees %d bytes, differing", len(b))
	}
	if b, err := os.ReadFile(p("big")); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("read back big: %d bytes %v", len(b), err)
	}
	if st, err := os.Stat(p("big")); err != nil || st.Size() != int64(len(big)) || st.Mode() != 0o640 {
		t.Errorf("stat big: %v %v", st, err)
	}
	if err := os.Mkdir(p("dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := os.WriteFile(p("dir/f"+strconv.Itoa(i)), []byte(strconv.Itoa(i)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(p("dir"))
	if err != nil || len(ents) != 300 {
		t.Fatalf("readdir: %d entries, %v", len(ents), err)
	}
	if err := os.Rename(p("dir/f7"), p("moved")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(h("moved")); string(b) != "7" {
		t.Errorf("moved holds %q", b)
	}
	if err := os.Symlink("moved", p("link")); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(p("link")); err != nil || l != "moved" {
		t.Errorf("readlink %q %v", l, err)
	}
	if b, err := os.ReadFile(p("link")); err != nil || string(b) != "7" {
		t.Errorf("read through link %q %v", b, err)
	}
	if err := os.Link(p("moved"), p("hard")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("hard"), 0o604); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(h("moved")); st.Mode() != 0o604 {
		t.Errorf("chmod through a hard link: %v", st.Mode())
	}
	if err := os.Truncate(p("big"), 10); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(h("big")); st.Size() != 10 {
		t.Errorf("truncate: %d", st.Size())
	}
	f, err := os.OpenFile(p("big"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("+tail")
	f.Sync()
	f.Close()
	if b, _ := os.ReadFile(h("big")); !bytes.Equal(b, append(big[:10:10], "+tail"...)) {
		t.Errorf("append: %q", b)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Blocks == 0 {
		t.Errorf("statfs: %+v %v", sfs, err)
	}
	// A symlink the host planted points outside the share; the client
	// resolves it in its own namespace (here relative to the mount), the
	// server never follows it.
	if l, _ := os.Readlink(p("hostlink")); l != "../sentinel" {
		t.Errorf("hostlink reads %q", l)
	}
	for _, bad := range []string{"..", "../sentinel"} {
		if _, err := os.Stat(filepath.Join(mnt, "dir", bad, "x")); err == nil {
			t.Errorf("stat through %q succeeded", bad)
		}
	}
	if err := os.Remove(p("dir/f8")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(p("dir")); err != nil {
		t.Fatal(err)
	}
	names := []string{}
	ents, _ = os.ReadDir(mnt)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"big", "existing", "hard", "hostlink", "link", "moved"}; !slices.Equal(names, want) {
		t.Errorf("root holds %v, want %v", names, want)
	}
	if s.Metrics().Requests.Load() < 100 {
		t.Errorf("only %d requests served", s.Metrics().Requests.Load())
	}
	w.check(t)
}

// TestKernelClientReadOnly checks a read-only share through the kernel
// client: reads work, every change fails with EROFS.
func TestKernelClientReadOnly(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(filepath.Join(w.share, "file"), []byte("data"), 0o666)
	os.Mkdir(filepath.Join(w.share, "dir"), 0o777)
	before := snapshot(t, w.share)
	mnt, _ := mountKernel(t, w, Config{ReadOnly: true})
	if b, err := os.ReadFile(filepath.Join(mnt, "file")); err != nil || string(b) != "data" {
		t.Fatalf("read %q %v", b, err)
	}
	try := map[string]error{
		"write":   os.WriteFile(filepath.Join(mnt, "file"), []byte("evil"), 0o666),
		"create":  os.WriteFile(filepath.Join(mnt, "new"), nil, 0o666),
		"mkdir":   os.Mkdir(filepath.Join(mnt, "newdir"), 0o777),
		"remove":  os.Remove(filepath.Join(mnt, "file")),
		"rmdir":   os.Remove(filepath.Join(mnt, "dir")),
		"rename":  os.Rename(filepath.Join(mnt, "file"), filepath.Join(mnt, "dir/file")),
		"symlink": os.Symlink("file", filepath.Join(mnt, "l")),
		"link":    os.Link(filepath.Join(mnt, "file"), filepath.Join(mnt, "h")),
		"chmod":   os.Chmod(filepath.Join(mnt, "file"), 0o600),
		"trunc":   os.Truncate(filepath.Join(mnt, "file"), 0),
	}
	for op, err := range try {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s: %v, want EROFS", op, err)
		}
	}
	if after := snapshot(t, w.share); after != before {
		t.Errorf("read-only share changed")
	}
	w.check(t)
}
