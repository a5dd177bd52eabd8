// SPDX-License-Identifier: Apache-2.0

package testimages

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// pythonBuild is part of the python image's cache key; bump it when
// Python or PackTree changes what ends up in the image.
const pythonBuild = "3"

// The python image's Debian suite and archive. The mirror is the one the
// host's apt uses (the only network the tests have).
const (
	PythonSuite  = "bookworm"
	PythonMirror = "http://deb.debian.org/debian"
)

// pythonTrim are the directories whose contents the python image drops:
// apt's caches (debootstrap leaves every .deb it installed in
// var/cache/apt/archives), documentation and translations. The
// directories themselves stay, so apt and dpkg still find them.
var pythonTrim = []string{
	"var/cache/apt", "var/lib/apt/lists", "var/log",
	"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
}

// Python builds (or returns from the cache) a layout holding the image
// "python": Debian PythonSuite installed by debootstrap --variant=minbase
// with python3 and python-is-python3 (the "python" command), packed into
// one layer with the tree's own owners, modes, mtimes, symlinks, hard links
// and device nodes (see PackTree);
// Env PATH, Cmd ["python3"]. The cache key is the Debian architecture, the
// suite, the mirror, apt's candidate version of python3 and the
// installed debootstrap's version, so a rebuild happens when one of them
// changes, not on every run.
//
// It runs debootstrap, which needs root (it chroots and creates device
// nodes) and about a minute of downloads.
func Python(ctx context.Context) (Layout, error) {
	for _, tool := range []string{"debootstrap", "apt-cache", "dpkg", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Layout{}, fmt.Errorf("testimages: python needs %s: %w", tool, ErrToolMissing)
		}
	}
	if os.Geteuid() != 0 {
		return Layout{}, fmt.Errorf("testimages: python needs root for debootstrap: %w", ErrToolMissing)
	}
	archOut, err := exec.CommandContext(ctx, "dpkg", "--print-architecture").Output()
	if err != nil {
		return Layout{}, fmt.Errorf("testimages: dpkg --print-architecture: %w", err)
	}
	arch := strings.TrimSpace(string(archOut))
	show, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", "python3").Output()
	if err != nil {
		return Layout{}, fmt.Errorf("testimages: apt-cache show python3: %w", err)
	}
	var pyVersion string
	for sc := bufio.NewScanner(bytes.NewReader(show)); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "Version: "); ok {
			pyVersion = v
			break
		}
	}
	if pyVersion == "" {
		return Layout{}, errors.New("testimages: apt-cache show python3: no Version field (run apt-get update)")
	}
	dbVersion, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", "debootstrap").Output()
	if err != nil {
		return Layout{}, fmt.Errorf("testimages: dpkg-query debootstrap: %w", err)
	}
	key := []string{pythonBuild, arch, PythonSuite, PythonMirror, pyVersion, string(dbVersion)}
	return cached("python", key, []string{"python"}, func(out string) error {
		root := filepath.Join(filepath.Dir(out), "rootfs")
		err := debootstrap(ctx, arch, root)
		// A debootstrap that died mid-way can leave /proc or /sys mounted in
		// the target; the caller's RemoveAll must not descend into them.
		unmountUnder(root)
		if err != nil {
			return err
		}
		for _, d := range pythonTrim {
			if err := emptyDir(filepath.Join(root, d)); err != nil {
				return err
			}
		}
		// debootstrap copies the host's resolv.conf and hostname; the
		// image should not carry the build machine's (the agent writes
		// both at boot when configured).
		for name, content := range map[string]string{"etc/resolv.conf": "", "etc/hostname": "python\n"} {
			if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
				return fmt.Errorf("testimages: %w", err)
			}
		}
		entries, err := PackTree(root)
		if err != nil {
			return err
		}
		return WriteLayout(out, []Image{{
			Name:         "python",
			Architecture: debArchToOCI(arch),
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"LANG=C.UTF-8",
			},
			Cmd:        []string{"python3"},
			WorkingDir: "/",
			Layers:     [][]Entry{entries},
		}})
	})
}

func debootstrap(ctx context.Context, arch, root string) error {
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include=python3,python-is-python3",
		"--arch="+arch, PythonSuite, root, PythonMirror)
	b, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	// The end of debootstrap's own log says which package failed.
	if log, rerr := os.ReadFile(filepath.Join(root, "debootstrap", "debootstrap.log")); rerr == nil {
		b = append(b, log[max(0, len(log)-4096):]...)
	}
	return fmt.Errorf("testimages: debootstrap %s: %w\n%s", PythonSuite, err, b[max(0, len(b)-8192):])
}

// unmountUnder lazily unmounts every mount at or below root, deepest first.
func unmountUnder(root string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// Field 5 is the mount point, octal-escaped (\040 for a space);
		// root is a path we made, without such characters.
		if len(f) > 4 && (f[4] == root || strings.HasPrefix(f[4], root+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}

// emptyDir removes what dir holds, keeping dir itself.
func emptyDir(dir string) error {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	for _, de := range des {
		if err := os.RemoveAll(filepath.Join(dir, de.Name())); err != nil {
			return fmt.Errorf("testimages: %w", err)
		}
	}
	return nil
}

// PackTree returns the entries of one layer holding the tree at root, in
// lexical order, as lstat sees it: owners, permission bits (setuid,
// setgid and sticky included), mtimes to the second, symlinks as links,
// files with several links as one file and tar hard links to it, device
// nodes and fifos. Sockets are skipped (a layer cannot hold one) and so
// are extended attributes. Run it as root on a tree root owns, or the
// owners are the caller's.
func PackTree(root string) ([]Entry, error) {
	var entries []Entry
	type inode struct{ dev, ino uint64 }
	first := map[inode]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		e := Entry{
			Name:    filepath.ToSlash(rel),
			Mode:    int64(st.Mode & 0o7777),
			UID:     int(st.Uid),
			GID:     int(st.Gid),
			ModTime: time.Unix(st.Mtim.Sec, 0).UTC(),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = tar.TypeDir
		case unix.S_IFREG:
			id := inode{uint64(st.Dev), st.Ino}
			if prev, ok := first[id]; ok && st.Nlink > 1 {
				e.Type, e.Linkname = tar.TypeLink, prev
				break
			}
			if st.Nlink > 1 {
				first[id] = e.Name
			}
			e.Type = tar.TypeReg
			if e.Data, err = os.ReadFile(p); err != nil {
				return err
			}
		case unix.S_IFLNK:
			e.Type = tar.TypeSymlink
			if e.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Type = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				e.Type = tar.TypeBlock
			}
			e.Devmajor, e.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			e.Type = tar.TypeFifo
		default:
			return nil
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("testimages: pack %s: %w", root, err)
	}
	return entries, nil
}
