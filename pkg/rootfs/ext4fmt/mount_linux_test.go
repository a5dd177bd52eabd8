// SPDX-License-Identifier: Apache-2.0

package ext4fmt_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// attach loop-attaches img and returns the device, skipping the test when
// the host cannot (not root, no loop driver, no free device).
func attach(t *testing.T, img string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mount test needs root for losetup and mount")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("mount test needs loop devices: %v", err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("mount test needs a loop device: losetup -f --show: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// mount mounts dev with -t ext4 at a fresh directory and returns it with
// an unmount function that is also registered as a cleanup.
func mount(t *testing.T, dev string, opts ...string) (string, func()) {
	t.Helper()
	mnt := t.TempDir()
	args := append([]string{"-t", "ext4"}, opts...)
	run(t, "mount", append(args, dev, mnt)...)
	mounted := true
	umount := func() {
		if mounted {
			mounted = false
			run(t, "umount", mnt)
		}
	}
	t.Cleanup(umount)
	return mnt, umount
}

// TestMount mounts a formatted 4 GiB image read-write through the host's
// ext4 driver, fills it, checks it with e2fsck, and reads it back after a
// remount; the same test runs against mkfs.ext4 for comparison.
func TestMount(t *testing.T) {
	for _, fm := range formatters {
		t.Run(fm.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			start := time.Now()
			fm.format(t, img, 4<<30)
			took := time.Since(start)
			formatted := allocated(t, img)
			dev := attach(t, img)

			mnt, umount := mount(t, dev)
			sum := fill(t, mnt)
			overlay(t, mnt)
			umount()
			fsck(t, img)
			checkTrees(t, img)

			mnt, umount = mount(t, dev, "-o", "ro")
			verify(t, mnt, sum)
			umount()
			t.Logf("%s 4 GiB: formatted in %v, %d KiB allocated; %d KiB after the workload",
				fm.name, took.Round(time.Microsecond), formatted>>10, allocated(t, img)>>10)
		})
	}
}

const (
	manyFiles = 2000 // enough to outgrow one 4096-byte directory block
	// bigFile is written in bigPiece pieces, each after a one-block hole,
	// so it has 50 extents: more than the four in the inode, which needs
	// an extent tree index and a leaf block.
	bigFile   = 50 << 20
	bigPiece  = 1 << 20
	blockSize = 4096
)

// fill creates a directory of manyFiles files, nested directories and a
// bigFile file of pseudo-random bytes with holes, and returns the big
// file's SHA-256.
func fill(t *testing.T, mnt string) [32]byte {
	t.Helper()
	many := filepath.Join(mnt, "many")
	if err := os.MkdirAll(filepath.Join(mnt, "a", "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(many, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range manyFiles {
		name := filepath.Join(many, fmt.Sprintf("file-with-a-longish-name-%05d", i))
		if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	f, err := os.Create(filepath.Join(mnt, "a", "b", "c", "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, bigFile)
	rand.NewChaCha8([32]byte{1}).Read(data)
	for off := 0; off < bigFile; off += bigPiece {
		clear(data[off : off+blockSize]) // left a hole
		if _, err := f.WriteAt(data[off+blockSize:off+bigPiece], int64(off+blockSize)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// checkTrees asks debugfs whether the big file got a depth-1 extent tree
// and the big directory a hash tree (dir_index).
func checkTrees(t *testing.T, img string) {
	t.Helper()
	debugfs := e2fsprogs(t, "debugfs")
	ex := run(t, debugfs, "-R", "ex /a/b/c/big", img)
	if !strings.Contains(ex, " 1/ 1 ") || strings.Count(ex, "\n") < bigFile/bigPiece {
		t.Errorf("debugfs ex /a/b/c/big: want %d extents under an index:\n%s", bigFile/bigPiece, ex)
	}
	ht := run(t, debugfs, "-R", "htree /many", img)
	if !strings.Contains(ht, "Root node dump:") {
		t.Errorf("debugfs htree /many: want a hashed directory:\n%.2000s", ht)
	}
}

// verify reads back what fill wrote.
func verify(t *testing.T, mnt string, sum [32]byte) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(mnt, "many"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != manyFiles {
		t.Errorf("many/ has %d entries after remount, want %d", len(ents), manyFiles)
	}
	f, err := os.Open(filepath.Join(mnt, "a", "b", "c", "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Error("big file differs after remount")
	}
	if fi, err := os.Stat(filepath.Join(mnt, "lost+found")); err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Errorf("lost+found: %v, %v; want a 0700 directory", fi, err)
	}
}

// overlay uses the file system as an overlayfs upper layer, the way the
// guest does: a whiteout (a 0:0 character device) for a deleted lower file
// and an opaque directory (the trusted.overlay.opaque xattr).
func overlay(t *testing.T, mnt string) {
	t.Helper()
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(b, []byte("\toverlay\n")) {
		t.Log("no overlayfs on this host: skipping the upper-layer check")
		return
	}
	lower := t.TempDir()
	if err := os.MkdirAll(filepath.Join(lower, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gone", "dir/old"} {
		if err := os.WriteFile(filepath.Join(lower, name), []byte("lower"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	upper, work := filepath.Join(mnt, "upper"), filepath.Join(mnt, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	merged := t.TempDir()
	run(t, "mount", "-t", "overlay", "overlay", "-o",
		"lowerdir="+lower+",upperdir="+upper+",workdir="+work, merged)
	err := func() error {
		if err := os.Remove(filepath.Join(merged, "gone")); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(merged, "dir")); err != nil {
			return err
		}
		if err := os.Mkdir(filepath.Join(merged, "dir"), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(merged, "dir", "new"), []byte("upper"), 0o644)
	}()
	run(t, "umount", merged)
	if err != nil {
		t.Fatalf("overlay on the image: %v", err)
	}

	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(upper, "gone"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("upper/gone: mode %o rdev %d, %v; want a 0:0 whiteout", st.Mode, st.Rdev, err)
	}
	v := make([]byte, 8)
	n, err := syscall.Getxattr(filepath.Join(upper, "dir"), "trusted.overlay.opaque", v)
	if err != nil || string(v[:n]) != "y" {
		t.Errorf("upper/dir: trusted.overlay.opaque = %q, %v; want \"y\"", v[:max(n, 0)], err)
	}
}
