// SPDX-License-Identifier: Apache-2.0

package cpio_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/internal/cpio"
)

// TestArchiveReadByCpio writes an archive and unpacks it with GNU cpio, the
// same reader semantics the kernel implements for newc.
func TestArchiveReadByCpio(t *testing.T) {
	tool, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("GNU cpio not installed (apt-get install cpio)")
	}
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("bin", 0o755))
	must(w.File("/bin/odd", 0o751, []byte("abcde"))) // length 5: exercises padding
	must(w.File("bin/empty", 0o600, nil))            // no data
	must(w.Symlink("bin/link", "odd"))               // target length 3
	must(w.FileFrom("big", 0o644, 3, strings.NewReader("xyzEXTRA")))
	must(w.Close())
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	dir := t.TempDir()
	cmd := exec.Command(tool, "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v\n%s", err, out)
	}
	for _, c := range []struct {
		path string
		data string
		perm os.FileMode
	}{
		{"bin/odd", "abcde", 0o751},
		{"bin/empty", "", 0o600},
		{"big", "xyz", 0o644},
	} {
		got, err := os.ReadFile(filepath.Join(dir, c.path))
		if err != nil {
			t.Errorf("read %s: %v", c.path, err)
			continue
		}
		if string(got) != c.data {
			t.Errorf("%s = %q, want %q", c.path, got, c.data)
		}
		st, _ := os.Stat(filepath.Join(dir, c.path))
		if st.Mode().Perm() != c.perm {
			t.Errorf("%s mode = %v, want %v", c.path, st.Mode().Perm(), c.perm)
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/link")); err != nil || target != "odd" {
		t.Errorf("readlink bin/link = %q, %v; want \"odd\"", target, err)
	}
}

func TestShortReaderFails(t *testing.T) {
	w := cpio.NewWriter(&bytes.Buffer{})
	if err := w.FileFrom("f", 0o644, 10, strings.NewReader("short")); err == nil {
		t.Fatal("FileFrom with a 5-byte reader for size 10: got nil error")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed write: got nil error, want the first error")
	}
}
