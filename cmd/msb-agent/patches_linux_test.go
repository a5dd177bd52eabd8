// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

// patchEnv is a root tree and a payload directory with the given payloads.
func patchEnv(t *testing.T, payloads map[string]string) (root string, dir *os.File) {
	t.Helper()
	root, pd := t.TempDir(), t.TempDir()
	for name, data := range payloads {
		if err := os.WriteFile(filepath.Join(pd, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "existing"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(pd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	return root, dir
}

func mode(m uint32) *uint32 { return &m }

func TestApplyPatches(t *testing.T) {
	root, dir := patchEnv(t, map[string]string{"0": "hello\n", "1": "more\n", "2": "new\n", "3": "#!/bin/sh\n"})
	patches := []bootcfg.Patch{
		{Op: bootcfg.PatchWrite, Path: "/app/greeting", Data: "0"},
		{Op: bootcfg.PatchAppend, Path: "/app/greeting", Data: "1"},
		{Op: bootcfg.PatchWrite, Path: "/etc/existing", Data: "2", Replace: true},
		{Op: bootcfg.PatchWrite, Path: "/usr/local/bin/tool", Data: "3", Mode: mode(0o4755)},
		{Op: bootcfg.PatchMkdir, Path: "/srv/a/b", Mode: mode(0o1777)},
		{Op: bootcfg.PatchMkdir, Path: "/srv/a/b"},
		{Op: bootcfg.PatchSymlink, Path: "/app/link", Target: "greeting"},
		{Op: bootcfg.PatchSymlink, Path: "/app/link", Target: "/etc/existing", Replace: true},
		{Op: bootcfg.PatchMkdir, Path: "/gone/deep"},
		{Op: bootcfg.PatchRemove, Path: "/gone"},
		{Op: bootcfg.PatchRemove, Path: "/never/was"},
	}
	if err := applyPatches(root, patches, dir); err != nil {
		t.Fatalf("applyPatches: %v", err)
	}
	for name, want := range map[string]string{"app/greeting": "hello\nmore\n", "etc/existing": "new\n", "usr/local/bin/tool": "#!/bin/sh\n"} {
		if b, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	for name, want := range map[string]uint32{"app/greeting": 0o644, "usr/local/bin/tool": 0o4755, "srv/a/b": 0o1777, "srv/a": 0o755} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, name), &st); err != nil || st.Mode&0o7777 != want {
			t.Errorf("%s mode %#o, %v; want %#o", name, st.Mode&0o7777, err, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "app/link")); err != nil || target != "/etc/existing" {
		t.Errorf("app/link -> %q, %v; want /etc/existing", target, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "gone")); !os.IsNotExist(err) {
		t.Errorf("/gone after remove: %v", err)
	}
	if left, _ := dir.ReadDir(-1); len(left) != 0 {
		t.Errorf("payloads left after apply: %v", left)
	}
}

func TestApplyPatchesFailures(t *testing.T) {
	for _, c := range []struct {
		name  string
		patch bootcfg.Patch
		want  string
	}{
		{"write onto existing", bootcfg.Patch{Op: bootcfg.PatchWrite, Path: "/etc/existing", Data: "p", From: "patch 0 (text /etc/existing)"},
			"patch 0 (text /etc/existing): path already exists in rootfs"},
		{"symlink onto existing", bootcfg.Patch{Op: bootcfg.PatchSymlink, Path: "/etc/existing", Target: "x"},
			"path already exists in rootfs"},
		{"replace a directory", bootcfg.Patch{Op: bootcfg.PatchWrite, Path: "/etc", Data: "p", Replace: true},
			"is a directory"},
		{"append to missing", bootcfg.Patch{Op: bootcfg.PatchAppend, Path: "/etc/missing", Data: "p", From: "patch 3 (append /etc/missing)"},
			"patch 3 (append /etc/missing): open "},
		{"append to directory", bootcfg.Patch{Op: bootcfg.PatchAppend, Path: "/etc", Data: "p"},
			"/etc"},
		{"mkdir over a file", bootcfg.Patch{Op: bootcfg.PatchMkdir, Path: "/etc/existing/sub"},
			"not a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root, dir := patchEnv(t, map[string]string{"p": "x"})
			err := applyPatches(root, []bootcfg.Patch{c.patch}, dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("applyPatches = %v, want an error containing %q", err, c.want)
			}
			if b, _ := os.ReadFile(filepath.Join(root, "etc", "existing")); string(b) != "old\n" {
				t.Errorf("etc/existing = %q after a failed patch", b)
			}
		})
	}
}
