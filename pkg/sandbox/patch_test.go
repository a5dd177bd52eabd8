// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

func u32(v uint32) *uint32 { return &v }

func TestValidatePatches(t *testing.T) {
	ok := []Patch{
		{Kind: PatchText, Path: "/etc/greeting", Content: "hi"},
		{Kind: PatchFile, Path: "/bin/blob", Data: []byte{0, 1}, Mode: u32(0o4755)},
		{Kind: PatchAppend, Path: "/etc/profile", Content: "x"},
		{Kind: PatchMkdir, Path: "/app"},
		{Kind: PatchRemove, Path: "/var/cache"},
		{Kind: PatchSymlink, Target: "../x", Link: "/usr/bin/x"},
		{Kind: PatchCopyFile, Src: "relative/host/file", Dst: "/app/f"},
		{Kind: PatchCopyDir, Src: "/host/dir", Dst: "/app"},
		{Kind: PatchRemove, Path: "/tmp/x"},
	}
	if errs := validatePatches(ok); len(errs) != 0 {
		t.Errorf("validatePatches(valid) = %v", errs)
	}
	for _, c := range []struct {
		p    Patch
		want string
	}{
		{Patch{Kind: "chmod", Path: "/a"}, `unknown kind "chmod"`},
		{Patch{Kind: PatchText, Path: "etc/x"}, `guest path "etc/x"`},
		{Patch{Kind: PatchText, Path: "/"}, `guest path "/"`},
		{Patch{Kind: PatchText, Path: "/a/../etc/passwd"}, "guest path"},
		{Patch{Kind: PatchText, Path: "/a/"}, "guest path"},
		{Patch{Kind: PatchText, Path: "/a\x00b"}, "guest path"},
		{Patch{Kind: PatchMkdir, Path: "/proc/x"}, "guest path"},
		{Patch{Kind: PatchRemove, Path: "/sys"}, "guest path"},
		{Patch{Kind: PatchFile, Path: "/dev/sda"}, "guest path"},
		{Patch{Kind: PatchSymlink, Target: "x", Path: "/set-path-not-link"}, `guest path ""`},
		{Patch{Kind: PatchSymlink, Link: "/l"}, "symlink target"},
		{Patch{Kind: PatchCopyFile, Dst: "/a"}, "host source"},
		{Patch{Kind: PatchCopyDir, Src: "/x", Dst: "/dev"}, "guest path"},
		{Patch{Kind: PatchMkdir, Path: "/a", Mode: u32(0o10000)}, "mode"},
	} {
		errs := validatePatches([]Patch{c.p})
		if len(errs) == 0 || !errors.Is(errs[0], ErrInvalidConfig) || !strings.Contains(errs[0].Error(), c.want) {
			t.Errorf("validatePatches(%+v) = %v, want ErrInvalidConfig mentioning %q", c.p, errs, c.want)
		}
	}
	// Config.Validate reports them with the rest.
	c := Config{Name: "x", Image: "busybox", Patches: []Patch{{Kind: PatchText, Path: "rel"}}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "patch 0 (text)") {
		t.Errorf("Config.Validate = %v, want the patch named", err)
	}
}

func TestBootPatches(t *testing.T) {
	src := t.TempDir()
	file := filepath.Join(src, "f")
	if err := os.WriteFile(file, []byte("host file\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(src, "tree")
	for _, d := range []string{"tree", "tree/sub"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", "g"), []byte("g\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A link out of the tree is copied as a link, never followed.
	if err := os.Symlink("../../f", filepath.Join(tree, "sub", "out")); err != nil {
		t.Fatal(err)
	}
	got, err := bootPatches([]Patch{
		{Kind: PatchText, Path: "/a", Content: "text", Replace: true},
		{Kind: PatchFile, Path: "/b", Data: []byte{0xff}, Mode: u32(0o600)},
		{Kind: PatchAppend, Path: "/a", Content: "more"},
		{Kind: PatchMkdir, Path: "/d", Mode: u32(0o700)},
		{Kind: PatchRemove, Path: "/e"},
		{Kind: PatchSymlink, Target: "/a", Link: "/l", Replace: true},
		{Kind: PatchCopyFile, Src: file, Dst: "/app/f"},
		{Kind: PatchCopyDir, Src: tree, Dst: "/srv", Replace: true},
	}, 256)
	if err != nil {
		t.Fatal(err)
	}
	cd := "patch 7 (copy_dir " + tree + " -> /srv)"
	want := []bootcfg.Patch{
		{Op: bootcfg.PatchWrite, Path: "/a", Content: []byte("text"), Replace: true, From: "patch 0 (text /a)"},
		{Op: bootcfg.PatchWrite, Path: "/b", Content: []byte{0xff}, Mode: u32(0o600), From: "patch 1 (file /b)"},
		{Op: bootcfg.PatchAppend, Path: "/a", Content: []byte("more"), From: "patch 2 (append /a)"},
		{Op: bootcfg.PatchMkdir, Path: "/d", Mode: u32(0o700), From: "patch 3 (mkdir /d)"},
		{Op: bootcfg.PatchRemove, Path: "/e", From: "patch 4 (remove /e)"},
		{Op: bootcfg.PatchSymlink, Path: "/l", Target: "/a", Replace: true, From: "patch 5 (symlink /l -> /a)"},
		{Op: bootcfg.PatchWrite, Path: "/app/f", Content: []byte("host file\n"), Mode: u32(0o640), From: "patch 6 (copy_file " + file + " -> /app/f)"},
		{Op: bootcfg.PatchMkdir, Path: "/srv", From: cd},
		{Op: bootcfg.PatchMkdir, Path: "/srv/sub", Mode: u32(0o750), From: cd},
		{Op: bootcfg.PatchWrite, Path: "/srv/sub/g", Content: []byte("g\n"), Mode: u32(0o600), Replace: true, From: cd},
		{Op: bootcfg.PatchSymlink, Path: "/srv/sub/out", Target: "../../f", Replace: true, From: cd},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bootPatches =\n%+v\nwant\n%+v", got, want)
	}
	// The result is a valid boot configuration once WriteInitramfs names
	// the payloads.
	for i := range got {
		if got[i].Op == bootcfg.PatchWrite || got[i].Op == bootcfg.PatchAppend {
			got[i].Data = string(rune('a' + i))
		}
	}
	if err := (&bootcfg.Config{Patches: got}).Validate(); err != nil {
		t.Errorf("bootcfg.Validate = %v", err)
	}
}

func TestBootPatchesHostErrors(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 17<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p    Patch
		want string
	}{
		{Patch{Kind: PatchCopyFile, Src: filepath.Join(dir, "missing"), Dst: "/x"}, "no such file"},
		{Patch{Kind: PatchCopyFile, Src: dir, Dst: "/x"}, "not a regular file"},
		{Patch{Kind: PatchCopyDir, Src: big, Dst: "/x"}, "not a directory"},
		{Patch{Kind: PatchCopyDir, Src: dir, Dst: "/x"}, "cannot copy"},
		{Patch{Kind: PatchCopyFile, Src: big, Dst: "/x"}, "quarter of the guest memory"},
	} {
		_, err := bootPatches([]Patch{c.p}, 64)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "patch 0 (") {
			t.Errorf("bootPatches(%s) = %v, want ErrInvalidConfig naming patch 0 and %q", c.p, err, c.want)
		}
	}
}
