// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestResolveUser(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	passwd := "# comment\nroot:x:0:0:root:/root:/bin/sh\nbroken line\nalice:x:1000:1000::/home/alice:/bin/sh\n"
	group := "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:bob\nbad:x:notanumber:alice\n"
	for name, body := range map[string]string{"passwd": passwd, "group": group} {
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		groups   []uint32
		home     string
		err      bool
	}{
		{spec: "alice", uid: 1000, gid: 1000, groups: []uint32{1000, 10}, home: "/home/alice"},
		{spec: "1000", uid: 1000, gid: 1000, groups: []uint32{1000, 10}, home: "/home/alice"},
		{spec: "alice:wheel", uid: 1000, gid: 10, groups: []uint32{10}, home: "/home/alice"},
		{spec: "alice:29", uid: 1000, gid: 29, groups: []uint32{29, 10}, home: "/home/alice"},
		{spec: "4242", uid: 4242, gid: 0, groups: []uint32{0}, home: "/"},
		{spec: "4242:7", uid: 4242, gid: 7, groups: []uint32{7}, home: "/"},
		{spec: "mallory", err: true},
		{spec: "alice:nogroup", err: true},
		{spec: ":10", err: true},
		{spec: "alice:", err: true},
	} {
		a, err := resolveUser(root, tc.spec)
		if tc.err {
			if !errors.Is(err, errUnknownUser) {
				t.Errorf("resolveUser(%q) = %+v, %v; want errUnknownUser", tc.spec, a, err)
			}
			continue
		}
		if err != nil || a.uid != tc.uid || a.gid != tc.gid || !slices.Equal(a.groups, tc.groups) || a.home != tc.home {
			t.Errorf("resolveUser(%q) = %+v, %v; want uid %d gid %d groups %v home %s", tc.spec, a, err, tc.uid, tc.gid, tc.groups, tc.home)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "A=1"}, []string{"A=2", "B=3", "PATH=/x"})
	if want := []string{"PATH=/x", "A=2", "B=3"}; !slices.Equal(got, want) {
		t.Errorf("mergeEnv = %q, want %q", got, want)
	}
}
