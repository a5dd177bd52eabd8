// SPDX-License-Identifier: Apache-2.0

package testimages_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	goerofs "github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/internal/testimages"
	"github.com/microsandbox-go/microsandbox/pkg/oci"
	"github.com/microsandbox-go/microsandbox/pkg/oci/ocitest"
	"github.com/microsandbox-go/microsandbox/pkg/rootfs"
)

// build converts a stored image with rootfs.Build and opens the result.
func build(t *testing.T, im oci.Image) fs.FS {
	t.Helper()
	ctx := context.Background()
	var layers []io.Reader
	for _, l := range im.Layers() {
		rc, err := l.Uncompressed(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		layers = append(layers, rc)
	}
	var img bytes.Buffer
	if _, err := rootfs.Build(ctx, layers, &img, rootfs.Options{TempDir: t.TempDir()}); err != nil {
		t.Fatalf("rootfs.Build = %v", err)
	}
	fsys, err := goerofs.Open(bytes.NewReader(img.Bytes()))
	if err != nil {
		t.Fatalf("goerofs.Open = %v", err)
	}
	return fsys
}

func newStore(t *testing.T) *oci.Store {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := oci.New(oci.Config{Dir: t.TempDir(), RegistriesConfPath: conf})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func busybox(t *testing.T) testimages.Layout {
	t.Helper()
	l, err := testimages.Busybox(context.Background())
	if errors.Is(err, testimages.ErrToolMissing) {
		t.Skipf("busybox test image: %v (needs Debian's apt and dpkg)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestBusyboxPullAndBuild pulls the busybox image from an in-process
// registry and converts it to an EROFS root filesystem.
func TestBusyboxPullAndBuild(t *testing.T) {
	l := busybox(t)
	ctx := context.Background()
	reg := ocitest.NewRegistry(t, ocitest.Options{})
	if err := reg.Push(ctx, l.Dir, "busybox", "library/busybox", "latest"); err != nil {
		t.Fatal(err)
	}
	im, err := newStore(t).Pull(ctx, reg.Ref("library/busybox", "latest"), oci.PullOptions{Insecure: true})
	if err != nil {
		t.Fatalf("Pull = %v", err)
	}
	if got := im.Config().Cmd; !slices.Equal(got, []string{"sh"}) {
		t.Errorf("Config().Cmd = %q", got)
	}
	fsys := build(t, im)
	for _, a := range append([]string{"sh", "nc", "wget", "nslookup", "ping", "dd", "sha256sum", "stty", "whoami", "hostname"}, testimages.BusyboxApplets...) {
		target, err := fsys.(fs.ReadLinkFS).ReadLink("bin/" + a)
		if err != nil || target != "busybox" {
			t.Errorf("bin/%s -> %q, %v; want busybox", a, target, err)
		}
	}
	fi, err := fs.Stat(fsys, "bin/busybox")
	if err != nil || fi.Size() < 500_000 || fi.Mode().Perm() != 0o755 {
		t.Fatalf("bin/busybox: %v, %v", fi, err)
	}
	passwd, err := fs.ReadFile(fsys, "etc/passwd")
	if err != nil || !strings.Contains(string(passwd), "\nnobody:x:65534:") {
		t.Errorf("etc/passwd = %q, %v", passwd, err)
	}
	for _, f := range []string{"etc/group", "etc/profile", "bin/printenv"} {
		if _, err := fs.Stat(fsys, f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestBusyboxApplets checks that every linked applet exists in the binary
// (runs it on the host, so only where the architectures agree).
func TestBusyboxApplets(t *testing.T) {
	l := busybox(t)
	dir := t.TempDir()
	s := newStore(t)
	im, err := s.Pull(context.Background(), l.Ref("busybox"), oci.PullOptions{})
	if err != nil {
		t.Skipf("Pull = %v (host architecture?)", err)
	}
	b, err := fs.ReadFile(build(t, im), "bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		t.Skipf("busybox --list: %v", err)
	}
	have := strings.Fields(string(out))
	for _, a := range testimages.BusyboxApplets {
		if !slices.Contains(have, a) {
			t.Errorf("busybox has no applet %q", a)
		}
	}
}

// TestLayeredBuild converts the layered image and checks the merge.
func TestLayeredBuild(t *testing.T) {
	l, err := testimages.Layered(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	im, err := newStore(t).Pull(context.Background(), l.Ref("layered"), oci.PullOptions{Platform: oci.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	fsys := build(t, im)
	var regular []string
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			regular = append(regular, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := testimages.LayeredMerged()
	for p, body := range want {
		got, err := fs.ReadFile(fsys, p)
		if err != nil || string(got) != body {
			t.Errorf("%s = %q, %v; want %q", p, got, err, body)
		}
	}
	if len(regular) != len(want) {
		t.Errorf("regular files %q, want the %d of LayeredMerged", regular, len(want))
	}
	for _, gone := range []string{"data/big", "opaque/old1", "opaque/old2"} {
		if _, err := fs.Stat(fsys, gone); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want not exist", gone, err)
		}
	}
	for p, want := range map[string]fs.FileMode{"dev/null": fs.ModeDevice | fs.ModeCharDevice, "dev/sda": fs.ModeDevice, "run-fifo": fs.ModeNamedPipe, "bin/sh": fs.ModeSymlink} {
		fi, err := fs.Stat(fsys, p)
		if p == "bin/sh" {
			fi, err = fs.Lstat(fsys, p)
		}
		if err != nil || fi.Mode().Type() != want {
			t.Errorf("%s: type %v, %v; want %v", p, fi, err, want)
		}
	}
	// go-erofs v0.3.1 returns the Linux mode bits in FileInfo.Mode, so
	// S_ISUID is 0o4000 there rather than fs.ModeSetuid.
	fi, err := fs.Stat(fsys, "bin/suid")
	if err != nil || (fi.Mode()&fs.ModeSetuid == 0 && fi.Mode()&0o4000 == 0) {
		t.Errorf("bin/suid: %v, %v; want setuid", fi, err)
	}
}

// TestDeterministic checks that the layout does not change between builds.
func TestDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := testimages.WriteLayout(a, testimages.LayeredImages()); err != nil {
		t.Fatal(err)
	}
	if err := testimages.WriteLayout(b, testimages.LayeredImages()); err != nil {
		t.Fatal(err)
	}
	ia, _ := os.ReadFile(filepath.Join(a, "index.json"))
	ib, _ := os.ReadFile(filepath.Join(b, "index.json"))
	if !bytes.Equal(ia, ib) {
		t.Errorf("index.json differs between builds:\n%s\n%s", ia, ib)
	}
}

// TestPackTree packs a tree with every kind of entry PackTree keeps and
// checks the entries lstat-level facts survive.
func TestPackTree(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(root, "d"), 0o755))
	must(unix.Chmod(filepath.Join(root, "d"), 0o2775))
	must(os.WriteFile(filepath.Join(root, "d", "f"), []byte("data"), 0o644))
	must(unix.Chmod(filepath.Join(root, "d", "f"), 0o4750))
	must(os.Link(filepath.Join(root, "d", "f"), filepath.Join(root, "d", "g")))
	must(os.Symlink("../outside", filepath.Join(root, "d", "l")))
	must(unix.Mkfifo(filepath.Join(root, "p"), 0o600))
	mtime := time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)
	must(os.Chtimes(filepath.Join(root, "d", "f"), mtime, mtime))

	entries, err := testimages.PackTree(root)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]testimages.Entry{}
	var names []string
	for _, e := range entries {
		got[e.Name] = e
		names = append(names, e.Name)
	}
	if want := []string{"d", "d/f", "d/g", "d/l", "p"}; !slices.Equal(names, want) {
		t.Fatalf("names = %q, want %q", names, want)
	}
	uid, gid := os.Getuid(), os.Getgid()
	for _, c := range []struct {
		name     string
		typ      byte
		mode     int64
		linkname string
	}{
		{"d", tar.TypeDir, 0o2775, ""},
		{"d/f", tar.TypeReg, 0o4750, ""},
		{"d/g", tar.TypeLink, 0o4750, "d/f"},
		{"d/l", tar.TypeSymlink, 0o777, "../outside"},
		{"p", tar.TypeFifo, 0o600, ""},
	} {
		e := got[c.name]
		if e.Type != c.typ || e.Mode != c.mode || e.Linkname != c.linkname || e.UID != uid || e.GID != gid {
			t.Errorf("%s = type %c mode %o link %q owner %d:%d; want %c %o %q %d:%d",
				c.name, e.Type, e.Mode, e.Linkname, e.UID, e.GID, c.typ, c.mode, c.linkname, uid, gid)
		}
	}
	if f := got["d/f"]; string(f.Data) != "data" || !f.ModTime.Equal(mtime) {
		t.Errorf("d/f data %q mtime %v; want \"data\" %v", f.Data, f.ModTime, mtime)
	}
	if len(got["d/g"].Data) != 0 {
		t.Errorf("hard link d/g carries %d bytes", len(got["d/g"].Data))
	}
}

// TestPythonImage builds the python image (debootstrap: root and about a
// minute the first time, cached after) and converts it.
func TestPythonImage(t *testing.T) {
	if testing.Short() {
		t.Skip("debootstrap downloads a Debian base system")
	}
	l, err := testimages.Python(context.Background())
	if errors.Is(err, testimages.ErrToolMissing) {
		t.Skipf("python test image: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	im, err := newStore(t).Pull(context.Background(), l.Ref("python"), oci.PullOptions{})
	if err != nil {
		t.Fatalf("Pull = %v", err)
	}
	if got := im.Config().Cmd; !slices.Equal(got, []string{"python3"}) {
		t.Errorf("Config().Cmd = %q", got)
	}
	fsys := build(t, im)
	if target, err := fsys.(fs.ReadLinkFS).ReadLink("usr/bin/python3"); err != nil || !strings.HasPrefix(target, "python3.") {
		t.Errorf("usr/bin/python3 -> %q, %v; want python3.x", target, err)
	}
	for _, p := range []string{"usr/bin/python3.11", "bin/sh", "usr/lib/python3.11/os.py", "etc/passwd"} {
		if _, err := fs.Stat(fsys, p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	// The trimmed directories stay, empty.
	for _, d := range []string{"var/cache/apt", "var/lib/apt/lists", "usr/share/doc"} {
		if des, err := fs.ReadDir(fsys, d); err != nil || len(des) != 0 {
			t.Errorf("%s: %d entries, %v; want an empty directory", d, len(des), err)
		}
	}
}
