// SPDX-License-Identifier: Apache-2.0

package bootcfg_test

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

func TestParsePatches(t *testing.T) {
	c, err := bootcfg.Parse([]byte(`{"patches": [
  {"op": "write", "path": "/etc/a", "data": "0", "mode": 420, "replace": true, "from": "patch 0 (text /etc/a)"},
  {"op": "append", "path": "/etc/a", "data": "1"},
  {"op": "mkdir", "path": "/srv/x", "mode": 1023},
  {"op": "remove", "path": "/var/cache"},
  {"op": "symlink", "path": "/usr/bin/py", "target": "python3"}
]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Patches) != 5 || *c.Patches[0].Mode != 0o644 || !c.Patches[0].Replace || c.Patches[4].Target != "python3" {
		t.Errorf("Parse lost patch fields: %+v", c.Patches)
	}
	if got := c.Patches[0].String(); got != "patch 0 (text /etc/a)" {
		t.Errorf("String() = %q, want From", got)
	}
	if got := c.Patches[3].String(); got != "patch (remove /var/cache)" {
		t.Errorf("String() without From = %q", got)
	}
}

func TestParsePatchesInvalid(t *testing.T) {
	for _, c := range []struct{ name, patch, want string }{
		{"op", `{"op": "chmod", "path": "/a"}`, `op "chmod"`},
		{"relative", `{"op": "remove", "path": "a"}`, "path"},
		{"root", `{"op": "remove", "path": "/"}`, "path"},
		{"dotdot", `{"op": "remove", "path": "/a/../b"}`, "path"},
		{"trailing slash", `{"op": "mkdir", "path": "/a/"}`, "path"},
		{"nul", `{"op": "remove", "path": "/a\u0000"}`, "path"},
		{"proc", `{"op": "remove", "path": "/proc/1"}`, "path"},
		{"sys", `{"op": "mkdir", "path": "/sys"}`, "path"},
		{"dev", `{"op": "write", "path": "/dev/null", "data": "0"}`, "path"},
		{"no data", `{"op": "write", "path": "/a"}`, "data"},
		{"data path", `{"op": "append", "path": "/a", "data": "../x"}`, "data"},
		{"data for mkdir", `{"op": "mkdir", "path": "/a", "data": "0"}`, "data is only"},
		{"no target", `{"op": "symlink", "path": "/a"}`, "target"},
		{"target for write", `{"op": "write", "path": "/a", "data": "0", "target": "x"}`, "target is only"},
		{"mode range", `{"op": "mkdir", "path": "/a", "mode": 4096}`, "mode"},
		{"mode for symlink", `{"op": "symlink", "path": "/a", "target": "b", "mode": 420}`, "mode is only"},
		{"unknown field", `{"op": "remove", "path": "/a", "content": "x"}`, `unknown field "content"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := `{"patches": [` + c.patch + `]}`
			_, err := bootcfg.Parse([]byte(in))
			if err == nil || !errors.Is(err, bootcfg.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Parse(%s) = %v, want an ErrInvalid mentioning %q", in, err, c.want)
			}
		})
	}
	_, err := bootcfg.Parse([]byte(`{"patches": [{"op": "write", "path": "/a", "data": "0"}, {"op": "append", "path": "/a", "data": "0"}]}`))
	if err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Errorf("Parse(shared data) = %v, want an error", err)
	}
}

// cpioFiles reads a newc archive into name -> contents.
func cpioFiles(t *testing.T, b []byte) map[string]string {
	t.Helper()
	files := map[string]string{}
	pad := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("cpio: no header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		size, nameSize := field(6), field(11)
		name := string(b[off+110 : off+110+nameSize-1])
		data := pad(off+110+nameSize) - off
		if name == "TRAILER!!!" {
			return files
		}
		files[name] = string(b[off+data : off+data+size])
		off = pad(off + data + size)
	}
}

func TestWriteInitramfsPatches(t *testing.T) {
	m := uint32(0o600)
	cfg := &bootcfg.Config{Patches: []bootcfg.Patch{
		{Op: bootcfg.PatchMkdir, Path: "/app"},
		{Op: bootcfg.PatchWrite, Path: "/app/a", Content: []byte("first\n"), Mode: &m},
		{Op: bootcfg.PatchAppend, Path: "/app/a", Content: []byte("second\n")},
		{Op: bootcfg.PatchWrite, Path: "/app/empty"},
	}}
	orig := *cfg
	orig.Patches = append([]bootcfg.Patch(nil), cfg.Patches...)
	var buf bytes.Buffer
	agent := []byte("agent")
	if err := bootcfg.WriteInitramfs(&buf, bytes.NewReader(agent), int64(len(agent)), cfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, &orig) {
		t.Errorf("WriteInitramfs changed its configuration: %+v", cfg.Patches)
	}
	files := cpioFiles(t, buf.Bytes())
	for name, want := range map[string]string{"msb/patches/1": "first\n", "msb/patches/2": "second\n", "msb/patches/3": "", "init": "agent"} {
		if got, ok := files[name]; !ok || got != want {
			t.Errorf("initramfs %s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	if _, ok := files["msb/patches/0"]; ok {
		t.Errorf("initramfs has a payload for mkdir")
	}
	got, err := bootcfg.Parse([]byte(files["msb/boot.json"]))
	if err != nil {
		t.Fatalf("Parse(boot.json) = %v", err)
	}
	var data []string
	for _, p := range got.Patches {
		data = append(data, p.Data)
		if p.Content != nil {
			t.Errorf("patch %s carries content in the JSON", p)
		}
	}
	if want := []string{"", "1", "2", "3"}; !reflect.DeepEqual(data, want) {
		t.Errorf("boot.json data names = %q, want %q", data, want)
	}
	if strings.Contains(files["msb/boot.json"], "first") {
		t.Errorf("boot.json holds a payload: %s", files["msb/boot.json"])
	}
}
