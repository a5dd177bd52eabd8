// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"reflect"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

func TestPatchFactory(t *testing.T) {
	mode := uint32(0o600)
	opts := PatchOptions{Mode: &mode, Replace: true}
	for _, c := range []struct {
		got, want PatchConfig
	}{
		{Patch.Text("/a", "t"), PatchConfig{Kind: PatchKindText, Path: "/a", Content: "t"}},
		{Patch.Text("/a", "t", opts), PatchConfig{Kind: PatchKindText, Path: "/a", Content: "t", Mode: &mode, Replace: true}},
		{Patch.File("/b", []byte{1}, opts), PatchConfig{Kind: PatchKindFile, Path: "/b", Data: []byte{1}, Mode: &mode, Replace: true}},
		{Patch.Append("/a", "more"), PatchConfig{Kind: PatchKindAppend, Path: "/a", Content: "more"}},
		// Mkdir uses only Mode, Symlink and CopyDir only Replace (upstream).
		{Patch.Mkdir("/d", opts), PatchConfig{Kind: PatchKindMkdir, Path: "/d", Mode: &mode}},
		{Patch.Remove("/e"), PatchConfig{Kind: PatchKindRemove, Path: "/e"}},
		{Patch.Symlink("t", "/l", opts), PatchConfig{Kind: PatchKindSymlink, Target: "t", Link: "/l", Replace: true}},
		{Patch.CopyFile("src", "/dst", opts), PatchConfig{Kind: PatchKindCopyFile, Src: "src", Dst: "/dst", Mode: &mode, Replace: true}},
		{Patch.CopyDir("src", "/dst", opts), PatchConfig{Kind: PatchKindCopyDir, Src: "src", Dst: "/dst", Replace: true}},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("got %+v, want %+v", c.got, c.want)
		}
	}
}

func TestWithPatchesAppends(t *testing.T) {
	var c SandboxConfig
	WithPatches(Patch.Mkdir("/a"), Patch.Text("/a/b", "x"))(&c)
	WithPatches(Patch.Symlink("/a/b", "/c"))(&c)
	sp := sandboxPatches(c.Patches)
	want := []sandbox.Patch{
		{Kind: sandbox.PatchMkdir, Path: "/a"},
		{Kind: sandbox.PatchText, Path: "/a/b", Content: "x"},
		{Kind: sandbox.PatchSymlink, Target: "/a/b", Link: "/c"},
	}
	if !reflect.DeepEqual(sp, want) {
		t.Fatalf("sandboxPatches = %+v, want %+v", sp, want)
	}
	sc := sandbox.Config{Name: "x", Image: "busybox", Patches: sp}
	if err := sc.Validate(); err != nil {
		t.Errorf("Validate = %v", err)
	}
	sc.Patches = sandboxPatches([]PatchConfig{Patch.Text("/proc/x", "")})
	if err := sc.Validate(); err == nil || !strings.Contains(err.Error(), "patch 0 (text)") {
		t.Errorf("Validate(/proc patch) = %v, want the patch named", err)
	}
}
