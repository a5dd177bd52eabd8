// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestVolumes(t *testing.T) {
	t.Setenv("MSB_HOME", t.TempDir())
	ctx := context.Background()
	v, err := CreateVolume(ctx, "data", WithVolumeQuota(64), WithVolumeLabels(map[string]string{"a": "b"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateVolume(ctx, "data"); !IsKind(err, ErrVolumeAlreadyExists) {
		t.Errorf("second CreateVolume = %v, want ErrVolumeAlreadyExists", err)
	}
	if _, err := CreateVolume(ctx, "disk", WithVolumeKind(VolumeKindDisk)); !IsKind(err, ErrInvalidConfig) {
		t.Errorf("disk volume without a size = %v, want ErrInvalidConfig", err)
	}
	if _, err := CreateVolume(ctx, "sized-dir", WithVolumeSize(16)); !IsKind(err, ErrInvalidConfig) {
		t.Errorf("directory volume with a size = %v, want ErrInvalidConfig", err)
	}
	dv, err := CreateVolume(ctx, "disk", WithVolumeKind(VolumeKindDisk), WithVolumeSize(16))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dv.Path()); err != nil || fi.Size() != 16<<20 || !fi.Mode().IsRegular() {
		t.Errorf("disk volume image %s: %v, %v; want a 16 MiB file", dv.Path(), fi, err)
	}
	if _, err := dv.FS().Read(ctx, "x"); !IsKind(err, ErrUnsupportedOperation) {
		t.Errorf("VolumeFs on a disk volume = %v, want ErrUnsupportedOperation", err)
	}
	dh, err := GetVolume(ctx, "disk")
	if err != nil || dh.Kind() != VolumeKindDisk || *dh.DiskFormat() != "raw" || *dh.DiskFstype() != "ext4" || *dh.CapacityBytes() != 16<<20 || dh.UsedBytes() >= 16<<20 {
		t.Errorf("GetVolume(disk) = %+v, %v", dh, err)
	}
	if err := RemoveVolume(ctx, "disk"); err != nil {
		t.Errorf("RemoveVolume(disk) = %v", err)
	}
	if _, err := GetVolume(ctx, "nope"); !IsKind(err, ErrVolumeNotFound) {
		t.Errorf("GetVolume(missing) = %v, want ErrVolumeNotFound", err)
	}
	fsys := v.FS()
	if err := fsys.Mkdir(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.WriteString(ctx, "a/b/f", "hello"); err != nil {
		t.Fatal(err)
	}
	h, err := GetVolume(ctx, "data")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := h.FS().ReadString(ctx, "a/b/f"); got != "hello" || err != nil {
		t.Errorf("Read = %q, %v", got, err)
	}
	if h.UsedBytes() != 5 || *h.QuotaMiB() != 64 || h.Labels()["a"] != "b" || h.Path() != v.Path() {
		t.Errorf("handle = used %d quota %v labels %v path %s", h.UsedBytes(), *h.QuotaMiB(), h.Labels(), h.Path())
	}
	// Escapes: absolute, "..", and a symlink out of the volume.
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("host"), 0o600)
	os.Symlink(outside, filepath.Join(v.Path(), "link"))
	os.Symlink("/", filepath.Join(v.Path(), "rootlink"))
	for _, rel := range []string{"/etc/passwd", "../x", "a/../../x", "link", "rootlink/etc/passwd"} {
		if _, err := fsys.Read(ctx, rel); !errors.Is(err, ErrPathEscape) {
			t.Errorf("Read(%q) = %v, want ErrPathEscape", rel, err)
		}
	}
	if err := fsys.WriteString(ctx, "rootlink/tmp/pwned", "x"); !errors.Is(err, ErrPathEscape) {
		t.Errorf("Write through a symlink = %v, want ErrPathEscape", err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "host" {
		t.Errorf("the host file changed: %q", b)
	}
	if ok, err := fsys.Exists(ctx, "a/b/f"); !ok || err != nil {
		t.Errorf("Exists = %v, %v", ok, err)
	}
	if _, err := fsys.Read(ctx, "missing"); !IsKind(err, ErrPathNotFound) {
		t.Errorf("Read(missing) = %v, want ErrPathNotFound", err)
	}
	if err := fsys.RemoveAll(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	list, err := ListVolumes(ctx)
	if err != nil || len(list) != 1 || list[0].Name() != "data" {
		t.Errorf("ListVolumes = %v, %v", list, err)
	}
	if err := RemoveVolume(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v.Path()); !os.IsNotExist(err) {
		t.Errorf("volume directory after RemoveVolume: %v", err)
	}
}

func TestMountsConvert(t *testing.T) {
	c := SandboxConfig{}
	WithMounts(map[string]MountConfig{
		"/data": Mount.Named("vol", MountOptions{Readonly: true, Noexec: true}),
		"/app":  Mount.Bind("./src", MountOptions{}),
	})(&c)
	WithMounts(map[string]MountConfig{"/scratch": Mount.Tmpfs(TmpfsOptions{SizeMiB: 8})})(&c)
	ms, err := sandboxMounts(c.Volumes)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || ms[0].Guest != "/app" || ms[0].Kind != "bind" || ms[1].Guest != "/data" || !ms[1].ReadOnly ||
		ms[1].Options[0] != "noexec" || ms[2].Kind != "tmpfs" || ms[2].SizeMiB != 8 {
		t.Errorf("mounts = %+v", ms)
	}
	for _, bad := range []map[string]MountConfig{
		{"/a:b": Mount.Tmpfs(TmpfsOptions{})},
		{"/a": Mount.Bind("x", MountOptions{HostPermissions: "mirror"})},
		{"/a": Mount.Disk("x.vmdk", DiskOptions{})},
		{"/a": Mount.Disk("x.img", DiskOptions{Format: "vmdk"})},
		{"/a": Mount.Disk("x.qcow2", DiskOptions{Format: "vhdx"})},
		{"/a": {kind: 9}},
	} {
		if _, err := sandboxMounts(bad); !IsKind(err, ErrInvalidConfig) {
			t.Errorf("sandboxMounts(%v) = %v, want ErrInvalidConfig", bad, err)
		}
	}
}
