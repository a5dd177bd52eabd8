// SPDX-License-Identifier: Apache-2.0

package rootfs_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// checkMount loop-mounts the image read-only through the host kernel's
// EROFS driver and compares a walk with the model. It needs Linux, root,
// erofs in /proc/filesystems and a loop device.
func checkMount(t *testing.T, img []byte, m *model) {
	if os.Geteuid() != 0 {
		t.Skip("loop mount needs root")
	}
	fss, _ := os.ReadFile("/proc/filesystems")
	if !bytes.Contains(fss, []byte("\terofs\n")) {
		t.Skip("host kernel has no erofs in /proc/filesystems")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "image.erofs")
	mnt := filepath.Join(dir, "mnt")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", p, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -t erofs -o loop,ro: %v: %s", err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	}()
	gotFiles := map[string]*got{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if rel == "." {
			rel = ""
		}
		g := &got{
			mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: int(st.Nlink), ino: st.Ino,
			mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
			major: unix.Major(st.Rdev), minor: unix.Minor(st.Rdev),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if g.body, err = os.ReadFile(p); err != nil {
				return err
			}
		case unix.S_IFLNK:
			if g.link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		g.xattrs = listXattrs(t, p)
		gotFiles[rel] = g
		return nil
	})
	if err != nil {
		t.Fatalf("walk mount: %v", err)
	}
	compare(t, m, gotFiles)
}

func listXattrs(t *testing.T, p string) map[string]string {
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	out := map[string]string{}
	for name := range strings.SplitSeq(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 1<<16)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Errorf("getxattr(%s, %s) = %v", p, name, err)
			continue
		}
		out[name] = string(v[:vn])
	}
	return out
}
