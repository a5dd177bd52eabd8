// SPDX-License-Identifier: Apache-2.0

package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	goerofs "github.com/erofs/go-erofs"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs"
	"github.com/microsandbox-go/microsandbox/pkg/rootfs/erofs"
)

// tent is one tar entry of a generated layer.
type tent struct {
	name   string
	typ    byte
	body   []byte
	link   string
	mode   int64
	uid    int
	gid    int
	mtime  time.Time
	xattrs map[string]string
	major  int64
	minor  int64
}

var baseTime = time.Unix(1700000000, 0)

func dir(name string, mode int64) tent { return tent{name: name, typ: tar.TypeDir, mode: mode} }
func file(name string, body []byte, mode int64) tent {
	return tent{name: name, typ: tar.TypeReg, body: body, mode: mode}
}
func symlink(name, target string) tent {
	return tent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) tent { return tent{name: name, typ: tar.TypeLink, link: target} }
func whiteout(name string) tent         { return tent{name: name, typ: tar.TypeReg} }

// mkLayer writes ents as a PAX tar stream (PAX keeps nanoseconds, big ids
// and xattrs).
func mkLayer(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		mt := e.mtime
		if mt.IsZero() {
			mt = baseTime
		}
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, ModTime: mt, Devmajor: e.major, Devminor: e.minor,
			Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if len(e.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("WriteHeader(%q) = %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// model is an independent, naive reference of layer application: a map
// from path to file, whiteouts applied by prefix. It does not resolve
// symlink parents; tests using it keep parents real directories.
type model struct {
	files map[string]*mfile // "" is the root
	layer map[string]int
}

type mfile struct {
	tent
	mode uint32 // Linux mode incl. type
}

func newModel() *model {
	return &model{
		files: map[string]*mfile{"": {mode: erofs.ModeDir | 0o755, tent: tent{mtime: time.Unix(0, 0)}}},
		layer: map[string]int{"": -1},
	}
}

func clean(name string) string {
	return strings.Trim(path.Clean("/"+name), "/")
}

func (m *model) removeTree(p string, below int) {
	for k := range m.files {
		if (k == p || strings.HasPrefix(k, p+"/")) && k != "" && m.layer[k] < below {
			delete(m.files, k)
		}
	}
}

func (m *model) apply(li int, ents []tent) {
	for _, e := range ents {
		p := clean(e.name)
		base := path.Base(p)
		parent := path.Dir(p)
		if parent == "." {
			parent = ""
		}
		if base == ".wh..wh..opq" {
			for k := range m.files {
				if strings.HasPrefix(k, parent+"/") || (parent == "" && k != "") {
					if m.layer[k] < li {
						delete(m.files, k)
					}
				}
			}
			continue
		}
		if name, ok := strings.CutPrefix(base, ".wh."); ok {
			m.removeTree(path.Join(parent, name), li)
			continue
		}
		if e.typ == tar.TypeLink {
			m.removeTree(p, li+1)
			m.files[p] = m.files[clean(e.link)]
			m.layer[p] = li
			continue
		}
		f := &mfile{tent: e}
		switch e.typ {
		case tar.TypeDir:
			f.mode = erofs.ModeDir
			if old, ok := m.files[p]; ok && old.mode&erofs.ModeTypeMask == erofs.ModeDir {
				// keep children
			} else {
				m.removeTree(p, li+1)
			}
		case tar.TypeReg:
			f.mode = erofs.ModeRegular
		case tar.TypeSymlink:
			f.mode = erofs.ModeSymlink
		case tar.TypeChar:
			f.mode = erofs.ModeChar
		case tar.TypeBlock:
			f.mode = erofs.ModeBlock
		case tar.TypeFifo:
			f.mode = erofs.ModeFifo
		}
		if e.typ != tar.TypeDir {
			m.removeTree(p, li+1)
		}
		f.mode |= uint32(e.mode) & 0o7777
		if f.mtime.IsZero() {
			f.mtime = baseTime
		}
		m.files[p] = f
		m.layer[p] = li
	}
}

// got is one file read back from an image.
type got struct {
	mode         uint32
	uid, gid     uint32
	mtime        time.Time
	nlink        int
	ino          uint64
	body         []byte
	link         string
	major, minor uint32
	xattrs       map[string]string
}

// readBack reads every file of the image with go-erofs.
func readBack(t *testing.T, img []byte) map[string]*got {
	t.Helper()
	fsys, err := goerofs.Open(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("goerofs.Open = %v", err)
	}
	out := map[string]*got{}
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*goerofs.Stat)
		if !ok {
			return fmt.Errorf("%s: Sys() = %T", p, fi.Sys())
		}
		g := &got{
			mode: linuxMode(st.Mode), uid: st.UID, gid: st.GID,
			mtime: time.Unix(int64(st.Mtime), int64(st.MtimeNs)),
			nlink: st.Nlink, ino: uint64(st.Ino), xattrs: st.Xattrs,
		}
		if len(g.xattrs) == 0 {
			g.xattrs = nil
		}
		// go-erofs v0.3.1 names the POSIX ACL indexes with a trailing dot
		// ("system.posix_acl_access."); Linux and erofs-utils do not.
		for _, acl := range []string{"system.posix_acl_access", "system.posix_acl_default"} {
			if v, ok := g.xattrs[acl+"."]; ok {
				delete(g.xattrs, acl+".")
				g.xattrs[acl] = v
			}
		}
		switch {
		case st.Mode.IsRegular():
			if g.body, err = fs.ReadFile(fsys, p); err != nil {
				return err
			}
		case st.Mode&fs.ModeSymlink != 0:
			if g.link, err = fsys.(fs.ReadLinkFS).ReadLink(p); err != nil {
				return err
			}
		case st.Mode&fs.ModeDevice != 0:
			g.major, g.minor = erofs.DecodeDev(st.Rdev)
		}
		key := p
		if p == "." {
			key = ""
		}
		out[key] = g
		return nil
	})
	if err != nil {
		t.Fatalf("WalkDir = %v", err)
	}
	return out
}

func linuxMode(m fs.FileMode) uint32 {
	v := uint32(m.Perm())
	switch {
	case m.IsDir():
		v |= erofs.ModeDir
	case m&fs.ModeSymlink != 0:
		v |= erofs.ModeSymlink
	case m&fs.ModeCharDevice != 0:
		v |= erofs.ModeChar
	case m&fs.ModeDevice != 0:
		v |= erofs.ModeBlock
	case m&fs.ModeNamedPipe != 0:
		v |= erofs.ModeFifo
	case m&fs.ModeSocket != 0:
		v |= erofs.ModeSocket
	default:
		v |= erofs.ModeRegular
	}
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

// compare checks the image tree against the model field by field.
func compare(t *testing.T, m *model, gotFiles map[string]*got) {
	t.Helper()
	wantKeys := slices.Sorted(maps.Keys(m.files))
	gotKeys := slices.Sorted(maps.Keys(gotFiles))
	if !slices.Equal(wantKeys, gotKeys) {
		t.Fatalf("paths differ:\nwant only: %v\ngot only: %v", minus(wantKeys, gotKeys), minus(gotKeys, wantKeys))
	}
	links := map[*mfile][]string{}
	for _, k := range wantKeys {
		links[m.files[k]] = append(links[m.files[k]], k)
	}
	inoOwner := map[uint64]*mfile{}
	for _, k := range wantKeys {
		w, g := m.files[k], gotFiles[k]
		if g.mode != w.mode {
			t.Errorf("%q: mode = %#o, want %#o", k, g.mode, w.mode)
		}
		if g.uid != uint32(w.uid) || g.gid != uint32(w.gid) {
			t.Errorf("%q: owner = %d:%d, want %d:%d", k, g.uid, g.gid, w.uid, w.gid)
		}
		if !g.mtime.Equal(w.mtime) {
			t.Errorf("%q: mtime = %v, want %v", k, g.mtime, w.mtime)
		}
		if !bytes.Equal(g.body, w.body) && w.mode&erofs.ModeTypeMask == erofs.ModeRegular {
			t.Errorf("%q: contents differ: %d bytes, want %d", k, len(g.body), len(w.body))
		}
		if g.link != w.link && w.typ == tar.TypeSymlink {
			t.Errorf("%q: target = %q, want %q", k, g.link, w.link)
		}
		if (w.typ == tar.TypeChar || w.typ == tar.TypeBlock) && (g.major != uint32(w.major) || g.minor != uint32(w.minor)) {
			t.Errorf("%q: rdev = %d:%d, want %d:%d", k, g.major, g.minor, w.major, w.minor)
		}
		wx := supportedXattrs(w.xattrs)
		if !maps.Equal(g.xattrs, wx) {
			t.Errorf("%q: xattrs = %q, want %q", k, g.xattrs, wx)
		}
		if w.mode&erofs.ModeTypeMask != erofs.ModeDir {
			if g.nlink != len(links[w]) {
				t.Errorf("%q: nlink = %d, want %d", k, g.nlink, len(links[w]))
			}
			if o, ok := inoOwner[g.ino]; ok && o != w {
				t.Errorf("%q: shares inode %d with another file", k, g.ino)
			}
			inoOwner[g.ino] = w
			for _, other := range links[w] {
				if gotFiles[other].ino != g.ino {
					t.Errorf("%q: ino %d, hard link %q has %d", k, g.ino, other, gotFiles[other].ino)
				}
			}
		} else {
			subdirs := 0
			for _, k2 := range wantKeys {
				if k2 != "" && path.Dir("/"+k2) == "/"+k && m.files[k2].mode&erofs.ModeTypeMask == erofs.ModeDir {
					subdirs++
				}
			}
			if g.nlink != 2+subdirs {
				t.Errorf("%q: dir nlink = %d, want %d", k, g.nlink, 2+subdirs)
			}
		}
	}
}

func supportedXattrs(x map[string]string) map[string]string {
	var out map[string]string
	for k, v := range x {
		if erofs.CheckXattr(k, v) == nil {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			out = append(out, x)
		}
	}
	return out
}

func build(t testing.TB, layers ...[]byte) ([]byte, rootfs.Stats, error) {
	t.Helper()
	rs := make([]io.Reader, len(layers))
	for i, l := range layers {
		rs[i] = bytes.NewReader(l)
	}
	var out bytes.Buffer
	st, err := rootfs.Build(context.Background(), rs, &out, rootfs.Options{TempDir: t.TempDir()})
	return out.Bytes(), st, err
}

// checkErofsUtils runs fsck.erofs and dump.erofs from erofs-utils on the
// image and checks the inode count.
func checkErofsUtils(t *testing.T, img []byte, wantInodes int) {
	t.Helper()
	fsck, err1 := exec.LookPath("fsck.erofs")
	dump, err2 := exec.LookPath("dump.erofs")
	if err := errors.Join(err1, err2); err != nil {
		t.Skipf("erofs-utils not installed (apt-get install erofs-utils): %v", err)
	}
	p := path.Join(t.TempDir(), "image.erofs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(fsck, p).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.erofs: %v\n%s", err, out)
	}
	// Full traversal with data checks: extract (as non-root it cannot chown, which does not fail).
	ext := path.Join(t.TempDir(), "x")
	if out, err := exec.Command(fsck, "--extract="+ext, p).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs --extract: %v\n%s", err, out)
	}
	out, err = exec.Command(dump, p).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs: %v\n%s", err, out)
	}
	mm := regexp.MustCompile(`inode count:\s+(\d+)`).FindSubmatch(out)
	if mm == nil {
		t.Fatalf("dump.erofs: no inode count in\n%s", out)
	}
	if n, _ := strconv.Atoi(string(mm[1])); n != wantInodes {
		t.Errorf("dump.erofs inode count = %d, want %d", n, wantInodes)
	}
	out, err = exec.Command(dump, "-s", p).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs -s: %v\n%s", err, out)
	}
}

// distinctInodes counts the distinct inodes of the model.
func distinctInodes(m *model) int {
	seen := map[*mfile]bool{}
	for _, f := range m.files {
		seen[f] = true
	}
	return len(seen)
}
