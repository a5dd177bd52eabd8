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
)

// TestPatches creates a busybox sandbox with one patch of every kind and
// checks them all from the first exec; then a sandbox whose Append names a
// missing file must fail to create, naming the patch.
func TestPatches(t *testing.T) {
	vmtest.RequireKVM(t)
	image := setupRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()

	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "tool.sh"), []byte("#!/bin/sh\necho tool\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(host, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", "data"), []byte("tree data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/data", filepath.Join(tree, "link")); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o751)
	sb, err := microsandbox.CreateSandbox(ctx, "patched",
		microsandbox.WithImage(image),
		microsandbox.WithMemory(256),
		microsandbox.WithPatches(
			microsandbox.Patch.Text("/etc/greeting", "Hello!\n"),
			microsandbox.Patch.Append("/etc/greeting", "again\n"),
			microsandbox.Patch.Text("/etc/profile", "# replaced\n", microsandbox.PatchOptions{Replace: true}),
			microsandbox.Patch.File("/opt/blob", []byte{0, 1, 2, 0xff}),
			microsandbox.Patch.Mkdir("/srv/www", microsandbox.PatchOptions{Mode: &mode}),
			microsandbox.Patch.Symlink("/etc/greeting", "/srv/www/index"),
			microsandbox.Patch.CopyFile(filepath.Join(host, "tool.sh"), "/usr/local/bin/tool"),
			microsandbox.Patch.CopyDir(tree, "/opt/tree"),
			microsandbox.Patch.Remove("/etc/group"),
		),
		// Patches run before the agent creates the working directory.
		microsandbox.WithWorkdir("/srv/www"))
	if err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	t.Cleanup(func() { sb.Stop(context.Background()) })

	script := strings.Join([]string{
		"cat /etc/greeting",
		"cat /etc/profile",
		"od -An -tx1 /opt/blob",
		"stat -c '%a %F' /srv/www",
		"readlink /srv/www/index",
		"cat /srv/www/index",
		"stat -c '%a' /usr/local/bin/tool",
		"tool",
		"cat /opt/tree/sub/data",
		"stat -c '%a' /opt/tree/sub/data",
		"readlink /opt/tree/link",
		"test -e /etc/group && echo group-present || echo group-removed",
		"pwd",
	}, "; ")
	out, err := sb.Shell(ctx, script)
	if err != nil {
		t.Fatalf("Shell: %v", err)
	}
	want := strings.Join([]string{
		"Hello!", "again",
		"# replaced",
		" 00 01 02 ff",
		"751 directory",
		"/etc/greeting",
		"Hello!", "again",
		"750",
		"tool",
		"tree data",
		"600",
		"sub/data",
		"group-removed",
		"/srv/www",
	}, "\n") + "\n"
	if out.Stdout() != want || out.ExitCode() != 0 {
		t.Errorf("patched root:\n%s(stderr %q, exit %d)\nwant:\n%s", out.Stdout(), out.Stderr(), out.ExitCode(), want)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}

	// A failing patch fails the boot, and the error names it.
	_, err = microsandbox.CreateSandbox(ctx, "patch-fails",
		microsandbox.WithImage(image),
		microsandbox.WithMemory(128),
		microsandbox.WithPatches(
			microsandbox.Patch.Mkdir("/app"),
			microsandbox.Patch.Append("/etc/missing.conf", "x=1\n"),
		))
	if err == nil {
		t.Fatal("CreateSandbox with an Append to a missing file succeeded")
	}
	if !microsandbox.IsKind(err, microsandbox.ErrPatchFailed) {
		t.Errorf("CreateSandbox with a failing patch = %v, want ErrPatchFailed", err)
	}
	if !strings.Contains(err.Error(), "patch 1 (append /etc/missing.conf)") {
		t.Errorf("CreateSandbox error does not name the patch:\n%v", err)
	}
	t.Logf("failing patch: %.300s", err)
}
