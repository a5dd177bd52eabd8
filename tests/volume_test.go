// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/rootfs/ext4fmt"
)

// TestVolumes mounts host directories into booted guests through
// virtio-fs: a read-only bind (reads work, writes fail with EROFS), a
// read-write bind with guest ownership, a named volume written by one
// sandbox and read by the next and from the host, its quota, a tmpfs with a
// size limit, and a raw ext4 disk image written by one sandbox and mounted
// read-only by the next.
func TestVolumes(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()

	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.py"), []byte("print('from the host')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rw := t.TempDir()
	os.Chmod(rw, 0o777)
	vol, err := microsandbox.CreateVolume(ctx, "shared", microsandbox.WithVolumeQuota(8))
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "data.img")
	if err := ext4fmt.FormatFile(img, 64<<20, ext4fmt.Options{Label: "data"}); err != nil {
		t.Fatal(err)
	}
	// A qcow2 image made by qemu-img (compressed clusters: the first
	// write into each is copied out), used read-write, then read-only.
	qimg := filepath.Join(t.TempDir(), "data.qcow2")
	if b, err := os.ReadFile(requireFile(t, "data.qcow2")); err != nil || os.WriteFile(qimg, b, 0o644) != nil {
		t.Fatalf("copy data.qcow2: %v", err)
	}
	if _, err := microsandbox.CreateVolume(ctx, "blockvol", microsandbox.WithVolumeKind(microsandbox.VolumeKindDisk), microsandbox.WithVolumeSize(32)); err != nil {
		t.Fatal(err)
	}
	mounts := microsandbox.WithMounts(map[string]microsandbox.MountConfig{
		"/vd":      microsandbox.Mount.Named("blockvol", microsandbox.MountOptions{}),
		"/disk":    microsandbox.Mount.Disk(img, microsandbox.DiskOptions{}),
		"/q":       microsandbox.Mount.Disk(qimg, microsandbox.DiskOptions{}),
		"/app/src": microsandbox.Mount.Bind(src, microsandbox.MountOptions{Readonly: true}),
		"/rw":      microsandbox.Mount.Bind(rw, microsandbox.MountOptions{}),
		"/data":    microsandbox.Mount.Named("shared", microsandbox.MountOptions{}),
		"/scratch": microsandbox.Mount.Tmpfs(microsandbox.TmpfsOptions{SizeMiB: 4}),
	})
	a := createSandbox(ctx, t, "vol-a", image, mounts)

	if got := mustExec(ctx, t, a, "cat", "/app/src/main.py"); got != "print('from the host')\n" {
		t.Errorf("read through the read-only bind = %q", got)
	}
	out, err := a.Shell(ctx, "echo x > /app/src/new 2>&1; echo x >> /app/src/main.py")
	if err != nil {
		t.Fatal(err)
	}
	if out.Success() || !strings.Contains(out.Stderr(), "Read-only file system") {
		t.Errorf("write into the read-only bind: exit %d, stderr %q; want EROFS", out.ExitCode(), out.Stderr())
	}
	if _, err := os.Stat(filepath.Join(src, "new")); !os.IsNotExist(err) {
		t.Errorf("the read-only share gained a file: %v", err)
	}

	// The agent widens a share's read-ahead from FUSE's 128 KiB.
	if got := mustExec(ctx, t, a, "sh", "-c", "cat /sys/class/bdi/$(grep ' /app/src ' /proc/self/mountinfo | cut -d' ' -f3)/read_ahead_kb"); got != "4096\n" {
		t.Errorf("read-ahead of the share = %q KiB, want 4096", got)
	}

	// Ownership: a file made by nobody belongs to nobody, in the guest
	// and on the host.
	if out, err := a.Exec(ctx, "sh", []string{"-c", "echo hi > /rw/by-nobody && stat -c '%u %a' /rw/by-nobody"}, microsandbox.WithExecUser("nobody")); err != nil || !out.Success() || out.Stdout() != "65534 644\n" {
		t.Errorf("file by nobody: %v %q %q", err, out.Stdout(), out.Stderr())
	}
	if fi, err := os.Stat(filepath.Join(rw, "by-nobody")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("host view of the file by nobody: %v %v", fi, err)
	}

	// A large directory removed while it is read (rm -rf): the share
	// lies on the L1's tmpfs, whose directory offsets are positions.
	mustExec(ctx, t, a, "sh", "-c", "mkdir /rw/many && cd /rw/many && i=0; while [ $i -lt 600 ]; do : > file-$i; i=$((i+1)); done")
	if out, err := a.Exec(ctx, "rm", []string{"-rf", "/rw/many"}); err != nil || !out.Success() {
		t.Errorf("rm -rf of 600 files on a share: %v %+v", err, out)
	}
	if _, err := os.Stat(filepath.Join(rw, "many")); !os.IsNotExist(err) {
		t.Errorf("the directory is still on the host: %v", err)
	}
	mustExec(ctx, t, a, "sh", "-c", "echo persisted > /data/note")
	mustExec(ctx, t, a, "sh", "-c", "echo on-disk > /disk/file")
	// The disk volume is the guest's own ext4, sized by the volume.
	if got := mustExec(ctx, t, a, "sh", "-c", "grep ' /vd ' /proc/mounts | cut -d' ' -f3; echo kept > /vd/note; df -m /vd | tail -1 | awk '{print ($2 > 20 && $2 <= 32)}'"); got != "ext4\n1\n" {
		t.Errorf("disk volume in the guest: %q, want ext4 and a size of at most 32 MiB", got)
	}
	if got := mustExec(ctx, t, a, "cat", "/q/hello"); got != "from a qcow2 image\n" {
		t.Errorf("read from the qcow2 disk = %q", got)
	}
	mustExec(ctx, t, a, "sh", "-c", "cd /q && head -c 3000000 /dev/urandom > blob && md5sum blob > blob.md5 && echo qwrite > new")
	// Quota: 8 MiB.
	out, err = a.Shell(ctx, "dd if=/dev/zero of=/data/big bs=1048576 count=16 2>&1")
	if err != nil {
		t.Fatal(err)
	}
	if out.Success() || !strings.Contains(out.Stdout(), "No space left on device") {
		t.Errorf("16 MiB into an 8 MiB volume: exit %d, %q; want ENOSPC", out.ExitCode(), out.Stdout())
	}
	mustExec(ctx, t, a, "rm", "-f", "/data/big")
	// tmpfs size: 4 MiB.
	out, err = a.Shell(ctx, "dd if=/dev/zero of=/scratch/big bs=1048576 count=8 2>&1")
	if err != nil {
		t.Fatal(err)
	}
	if out.Success() || !strings.Contains(out.Stdout(), "No space left on device") {
		t.Errorf("8 MiB into a 4 MiB tmpfs: exit %d, %q; want ENOSPC", out.ExitCode(), out.Stdout())
	}
	if err := microsandbox.RemoveVolume(ctx, "shared"); !microsandbox.IsKind(err, microsandbox.ErrInvalidConfig) {
		t.Errorf("RemoveVolume while mounted = %v, want ErrInvalidConfig", err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	if got, err := vol.FS().ReadString(ctx, "note"); got != "persisted\n" || err != nil {
		t.Errorf("host read of the volume = %q, %v", got, err)
	}
	b := createSandbox(ctx, t, "vol-b", image, microsandbox.WithMounts(map[string]microsandbox.MountConfig{
		"/data": microsandbox.Mount.Named("shared", microsandbox.MountOptions{Readonly: true}),
		"/disk": microsandbox.Mount.Disk(img, microsandbox.DiskOptions{Readonly: true}),
		"/q":    microsandbox.Mount.Disk(qimg, microsandbox.DiskOptions{Format: "qcow2", Readonly: true}),
		"/vd":   microsandbox.Mount.Named("blockvol", microsandbox.MountOptions{Readonly: true}),
	}))
	if got := mustExec(ctx, t, b, "cat", "/vd/note"); got != "kept\n" {
		t.Errorf("the disk volume in the next sandbox: %q", got)
	}
	if got := mustExec(ctx, t, b, "sh", "-c", "cat /q/new && cd /q && md5sum -c blob.md5"); got != "qwrite\nblob: OK\n" {
		t.Errorf("the qcow2 disk in the next sandbox: %q", got)
	}
	if got := mustExec(ctx, t, b, "cat", "/data/note"); got != "persisted\n" {
		t.Errorf("the next sandbox reads %q", got)
	}
	if got := mustExec(ctx, t, b, "cat", "/disk/file"); got != "on-disk\n" {
		t.Errorf("the disk image in the next sandbox: %q", got)
	}
	if out, err := b.Shell(ctx, "echo x > /disk/other"); err != nil || out.Success() || !strings.Contains(out.Stderr(), "Read-only file system") {
		t.Errorf("write to the read-only disk: %v %+v, want EROFS", err, out)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := microsandbox.RemoveVolume(ctx, "shared"); err != nil {
		t.Errorf("RemoveVolume after the sandboxes stopped: %v", err)
	}
	if _, err := microsandbox.CreateSandbox(ctx, "vol-c", microsandbox.WithImage(image), microsandbox.WithMounts(map[string]microsandbox.MountConfig{
		"/data": microsandbox.Mount.Named("missing", microsandbox.MountOptions{}),
	})); !microsandbox.IsKind(err, microsandbox.ErrVolumeNotFound) {
		t.Errorf("a mount of a missing volume = %v, want ErrVolumeNotFound", err)
	}
}
