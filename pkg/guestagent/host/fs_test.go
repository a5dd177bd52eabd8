// SPDX-License-Identifier: Apache-2.0

package host_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/guest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

func TestFSRoundTrip(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	c, ctx, dir := e.client, testCtx(t), t.TempDir()
	data := make([]byte, 5<<20+123)
	rand.Read(data)
	p := filepath.Join(dir, "a/b/c/file.bin")
	if err := c.WriteFile(ctx, p, data, host.WriteOptions{Mode: 0o640, CreateParents: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file on disk: %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
	got, err := c.ReadFile(ctx, p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadFile = %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
	// Streaming both ways through io.Copy.
	w, err := c.OpenWriter(ctx, p+".copy", host.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.OpenReader(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(w, r); err != nil || n != int64(len(data)) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	r.Close()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p + ".copy"); !bytes.Equal(got, data) {
		t.Error("streamed copy differs")
	}
	// Append.
	if err := c.WriteFile(ctx, p+".copy", []byte("tail"), host.WriteOptions{Append: true}); err != nil {
		t.Fatal(err)
	}

	fi, err := c.Stat(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Kind != host.KindFile || fi.Size != int64(len(data)) || fi.Mode != 0o640 || fi.UID != uint32(os.Getuid()) || time.Since(fi.ModTime) > time.Minute {
		t.Errorf("Stat = %+v", fi)
	}
	if err := os.Symlink("a/b", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if fi, err := c.Stat(ctx, filepath.Join(dir, "link")); err != nil || fi.Kind != host.KindSymlink || fi.SymlinkTarget != "a/b" || fi.Mode&fs.ModeSymlink == 0 {
		t.Errorf("Stat(link) = %+v, %v", fi, err)
	}

	if err := c.Mkdir(ctx, filepath.Join(dir, "x/y/z"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir(ctx, filepath.Join(dir, "x/y/z"), 0); err != nil {
		t.Errorf("Mkdir of an existing directory = %v", err)
	}
	ents, err := c.List(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range ents {
		names = append(names, en.Name+":"+en.Kind.String())
	}
	slices.Sort(names)
	if want := []string{"a:directory", "link:symlink", "x:directory"}; !slices.Equal(names, want) {
		t.Errorf("List = %q, want %q", names, want)
	}

	if err := c.Copy(ctx, filepath.Join(dir, "a"), filepath.Join(dir, "a2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "a2/b/c/file.bin")); !bytes.Equal(got, data) {
		t.Error("Copy of a directory lost the file")
	}
	if err := c.Rename(ctx, filepath.Join(dir, "a2"), filepath.Join(dir, "a3")); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveAll(ctx, filepath.Join(dir, "a3")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a3")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a3 still there: %v", err)
	}
	if err := c.Remove(ctx, p+".copy"); err != nil {
		t.Fatal(err)
	}
}

func TestFSLargeListing(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	dir := t.TempDir()
	for i := range 3000 {
		if err := os.WriteFile(filepath.Join(dir, "file-with-a-rather-long-name-"+string(rune('a'+i%26))+itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := e.client.List(testCtx(t), dir)
	if err != nil || len(ents) != 3000 {
		t.Fatalf("List = %d entries, %v; want 3000", len(ents), err)
	}
}

func itoa(i int) string {
	return string([]byte{byte('0' + i/1000%10), byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)})
}

func TestFSErrors(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	c, ctx, dir := e.client, testCtx(t), t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "full/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"read missing", func() error { _, err := c.ReadFile(ctx, filepath.Join(dir, "nope")); return err }, guestagent.ErrNotFound},
		{"stat missing", func() error { _, err := c.Stat(ctx, filepath.Join(dir, "nope")); return err }, fs.ErrNotExist},
		{"read a directory", func() error { _, err := c.ReadFile(ctx, dir); return err }, guestagent.ErrIsDir},
		{"list a file", func() error { _, err := c.List(ctx, file); return err }, guestagent.ErrNotDir},
		{"mkdir under a file", func() error { return c.Mkdir(ctx, filepath.Join(file, "sub"), 0) }, guestagent.ErrNotDir},
		{"write without parents", func() error {
			return c.WriteFile(ctx, filepath.Join(dir, "no/such/f"), []byte("x"), host.WriteOptions{})
		}, guestagent.ErrNotFound},
		{"write over a directory", func() error { return c.WriteFile(ctx, dir, make([]byte, 3<<20), host.WriteOptions{}) }, guestagent.ErrIsDir},
		{"remove non-empty", func() error { return c.Remove(ctx, filepath.Join(dir, "full")) }, guestagent.ErrNotEmpty},
		{"remove-all missing", func() error { return c.RemoveAll(ctx, filepath.Join(dir, "nope")) }, guestagent.ErrNotFound},
		{"rename missing", func() error { return c.Rename(ctx, filepath.Join(dir, "nope"), file) }, guestagent.ErrNotFound},
		{"copy into itself", func() error { return c.Copy(ctx, filepath.Join(dir, "full"), filepath.Join(dir, "full/sub/x")) }, guestagent.ErrInvalid},
		{"relative path", func() error { _, err := c.Stat(ctx, "relative/path"); return err }, guestagent.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			var re *guestagent.RemoteError
			if !errors.Is(err, tc.want) || !errors.As(err, &re) {
				t.Fatalf("error = %v, want a RemoteError matching %v", err, tc.want)
			}
		})
	}
	// The connection survives all of them.
	if _, err := c.Stat(ctx, file); err != nil {
		t.Fatal(err)
	}
}

func TestMetrics(t *testing.T) {
	e := start(t, guest.Config{}, host.Config{})
	m, err := e.client.Metrics(testCtx(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if m.MemoryTotalBytes == 0 || m.MemoryAvailableBytes == 0 || m.MemoryAvailableBytes > m.MemoryTotalBytes ||
		m.DiskTotalBytes == 0 || m.DiskAvailableBytes > m.DiskTotalBytes || m.Uptime <= 0 || m.Processes < 1 {
		t.Errorf("Metrics = %+v", m)
	}
}
