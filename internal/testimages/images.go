// SPDX-License-Identifier: Apache-2.0

package testimages

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// builderVersion is part of every cache key; bump it when the output of a
// builder changes.
const builderVersion = "2"

// Layout is a built OCI image layout.
type Layout struct {
	// Dir is the layout directory; treat it as read-only.
	Dir string
	// Names are the image ref names in the layout.
	Names []string
}

// Ref returns the "oci:DIR:NAME" reference of the image name.
func (l Layout) Ref(name string) string { return "oci:" + l.Dir + ":" + name }

// CacheDir returns the cache root, $XDG_CACHE_HOME/microsandbox-go/testimages.
func CacheDir() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("testimages: %w", err)
	}
	return filepath.Join(c, "microsandbox-go", "testimages"), nil
}

// cached returns the layout in the cache under name-key, building it with
// build(dir) if missing. Concurrent builders each build into their own
// temporary directory; the first rename wins.
func cached(name string, key []string, names []string, build func(dir string) error) (Layout, error) {
	root, err := CacheDir()
	if err != nil {
		return Layout{}, err
	}
	h := sha256.Sum256([]byte(strings.Join(append([]string{builderVersion, name}, key...), "\x00")))
	dir := filepath.Join(root, name+"-"+hex.EncodeToString(h[:8]))
	l := Layout{Dir: dir, Names: names}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		return l, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return Layout{}, fmt.Errorf("testimages: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".build-"+name+"-")
	if err != nil {
		return Layout{}, fmt.Errorf("testimages: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "layout")
	if err := build(out); err != nil {
		return Layout{}, err
	}
	if err := os.Rename(out, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "index.json")); serr == nil {
			return l, nil // built by someone else meanwhile
		}
		return Layout{}, fmt.Errorf("testimages: %w", err)
	}
	return l, nil
}

// BusyboxApplets are linked to /bin/busybox in the busybox image
// (/bin/printenv is a script, see printenvScript).
var BusyboxApplets = []string{
	"sh", "ash", "nc", "wget", "nslookup", "ping", "dd", "sha256sum", "md5sum", "stty",
	"whoami", "hostname", "id", "cat", "echo", "ls", "env", "sleep",
	"mkdir", "rm", "rmdir", "mv", "cp", "ln", "touch", "chmod", "chown", "head", "tail",
	"grep", "sed", "awk", "sort", "uniq", "wc", "tr", "cut", "find", "xargs", "test",
	"true", "false", "pwd", "uname", "date", "ps", "kill", "mount", "umount", "df", "du",
	"free", "ip", "ifconfig", "route", "tar", "gzip", "gunzip", "vi", "more", "stat",
	"tee", "seq", "yes", "basename", "dirname", "readlink", "realpath", "sync", "which",
	"base64", "od", "hexdump", "timeout", "usleep", "watch", "top", "mktemp",
}

// Busybox builds (or returns from the cache) a layout holding the image
// "busybox": /bin/busybox from Debian's busybox-static for the host's
// Debian architecture, its applets as symlinks in /bin, /usr/bin/env,
// /etc/passwd (root, nobody), /etc/group, /etc/profile, and the usual
// empty directories. It runs apt-cache, apt-get download and dpkg-deb.
func Busybox(ctx context.Context) (Layout, error) {
	for _, tool := range []string{"apt-cache", "apt-get", "dpkg-deb", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Layout{}, fmt.Errorf("testimages: busybox needs %s: %w", tool, ErrToolMissing)
		}
	}
	archOut, err := exec.CommandContext(ctx, "dpkg", "--print-architecture").Output()
	if err != nil {
		return Layout{}, fmt.Errorf("testimages: dpkg --print-architecture: %w", err)
	}
	arch := strings.TrimSpace(string(archOut))
	show, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", "busybox-static").Output()
	if err != nil {
		return Layout{}, fmt.Errorf("testimages: apt-cache show busybox-static: %w", err)
	}
	var debSHA, version string
	sc := bufio.NewScanner(bytes.NewReader(show))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "SHA256: "); ok && debSHA == "" {
			debSHA = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "Version: "); ok && version == "" {
			version = v
		}
	}
	if debSHA == "" {
		return Layout{}, errors.New("testimages: apt-cache show busybox-static: no SHA256 field")
	}
	return cached("busybox", []string{arch, debSHA}, []string{"busybox"}, func(out string) error {
		work := filepath.Dir(out)
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", "busybox-static")
		cmd.Dir = work
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("testimages: apt-get download busybox-static: %w\n%s", err, b)
		}
		debs, _ := filepath.Glob(filepath.Join(work, "busybox-static_*.deb"))
		if len(debs) != 1 {
			return fmt.Errorf("testimages: apt-get download left %d .deb files", len(debs))
		}
		deb, err := os.ReadFile(debs[0])
		if err != nil {
			return fmt.Errorf("testimages: %w", err)
		}
		if got := sha256.Sum256(deb); hex.EncodeToString(got[:]) != debSHA {
			return fmt.Errorf("testimages: %s has sha256 %x, apt says %s", debs[0], got, debSHA)
		}
		x := filepath.Join(work, "x")
		if b, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
			return fmt.Errorf("testimages: dpkg-deb -x: %w\n%s", err, b)
		}
		bin, err := os.ReadFile(filepath.Join(x, "bin", "busybox"))
		if err != nil {
			return fmt.Errorf("testimages: busybox-static %s: %w", version, err)
		}
		return WriteLayout(out, []Image{BusyboxImage(bin, debArchToOCI(arch))})
	})
}

// printenvScript is printenv(1) for busybox: all variables, or the values
// of the named ones (exit 1 if one is unset). awk reads ENVIRON, so no
// name is ever evaluated as shell code.
const printenvScript = `#!/bin/sh
[ $# -eq 0 ] && exec env
exec awk 'BEGIN { rc = 0; for (i = 1; i < ARGC; i++) { if (ARGV[i] in ENVIRON) print ENVIRON[ARGV[i]]; else rc = 1 }; exit rc }' "$@"
`

// ErrToolMissing is wrapped when a host tool a builder needs is absent.
var ErrToolMissing = errors.New("testimages: host tool missing")

func debArchToOCI(a string) string {
	switch a {
	case "armhf":
		return "arm"
	case "i386":
		return "386"
	}
	return a // amd64, arm64, riscv64, s390x, ppc64le match
}

// BusyboxImage is the busybox image around the given busybox binary.
func BusyboxImage(busybox []byte, arch string) Image {
	e := []Entry{
		Dir("bin", 0o755),
		{Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Data: busybox},
	}
	for _, a := range BusyboxApplets {
		e = append(e, Symlink("bin/"+a, "busybox"))
	}
	// Debian's busybox-static has no printenv applet.
	e = append(e, File("bin/printenv", 0o755, printenvScript))
	e = append(e,
		Dir("dev", 0o755), Dir("proc", 0o555), Dir("sys", 0o555), Dir("run", 0o755),
		Dir("tmp", 0o1777), Dir("root", 0o700), Dir("home", 0o755),
		Dir("var", 0o755), Dir("var/tmp", 0o1777),
		Dir("usr", 0o755), Dir("usr/bin", 0o755), Symlink("usr/bin/env", "../../bin/busybox"),
		Dir("sbin", 0o755), Dir("usr/sbin", 0o755),
		Dir("etc", 0o755),
		File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		File("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"),
		File("etc/profile", 0o644, "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n"),
		File("etc/hostname", 0o644, "busybox\n"),
	)
	return Image{
		Name:         "busybox",
		Architecture: arch,
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cmd:          []string{"sh"},
		WorkingDir:   "/",
		Layers:       [][]Entry{e},
	}
}

// Layered builds (or returns from the cache) a layout of conversion-test
// images; see LayeredImages.
func Layered(ctx context.Context) (Layout, error) {
	if err := ctx.Err(); err != nil {
		return Layout{}, err
	}
	ims := LayeredImages()
	var names []string
	for _, im := range ims {
		if len(names) == 0 || names[len(names)-1] != im.Name {
			names = append(names, im.Name)
		}
	}
	return cached("layered", nil, names, func(out string) error { return WriteLayout(out, ims) })
}

// LayeredImages are images for conversion and pull tests:
//
//   - "layered": three layers: a base tree; a layer with whiteouts, an
//     opaque directory, a hard link, symlinks, a character device, a fifo,
//     a setuid file, an xattr and non-root owners; a top layer that
//     replaces a file and re-creates a whited-out one.
//   - "multiarch": an image index with linux/amd64 and linux/arm64/v8
//     images, each with one file /arch naming its architecture.
//
// LayeredMerged describes the tree "layered" must convert to.
func LayeredImages() []Image {
	base := []Entry{
		Dir("bin", 0o755),
		File("bin/tool", 0o755, "#!/bin/sh\necho base\n"),
		Dir("etc", 0o755),
		File("etc/config", 0o644, "base config\n"),
		File("etc/removed", 0o644, "to be whited out\n"),
		Dir("opaque", 0o755),
		File("opaque/old1", 0o644, "hidden by opaque\n"),
		File("opaque/old2", 0o644, "hidden by opaque\n"),
		Dir("data", 0o755),
		File("data/big", 0o644, strings.Repeat("0123456789abcdef", 4096)),
		Dir("home", 0o755),
		{Name: "home/user", Type: tar.TypeDir, Mode: 0o750, UID: 1000, GID: 1000},
		{Name: "home/user/notes", Type: tar.TypeReg, Mode: 0o600, UID: 1000, GID: 1000, Data: []byte("mine\n")},
	}
	mid := []Entry{
		Whiteout("etc/removed"),
		OpaqueWhiteout("opaque"),
		File("opaque/new", 0o644, "after opaque\n"),
		Hardlink("bin/tool-link", "bin/tool"),
		Symlink("bin/sh", "tool"),
		Symlink("etc/abs-link", "/etc/config"),
		Symlink("dangling", "/nonexistent/target"),
		Dir("dev", 0o755),
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "dev/sda", Type: tar.TypeBlock, Mode: 0o660, GID: 6, Devmajor: 8, Devminor: 0},
		{Name: "run-fifo", Type: tar.TypeFifo, Mode: 0o644},
		{Name: "bin/suid", Type: tar.TypeReg, Mode: 0o4755, Data: []byte("suid\n")},
		{Name: "etc/xattr", Type: tar.TypeReg, Mode: 0o644, Data: []byte("x\n"), Xattrs: map[string]string{"user.test": "value"}},
	}
	top := []Entry{
		File("etc/config", 0o600, "top config\n"),
		File("etc/removed", 0o644, "re-created\n"),
		Whiteout("data/big"),
	}
	arch := func(a, v string) Image {
		return Image{
			Name: "multiarch", Architecture: a, Variant: v, Cmd: []string{"/bin/true"},
			Layers: [][]Entry{{File("arch", 0o644, a+"\n")}},
		}
	}
	return []Image{
		{
			Name:       "layered",
			Env:        []string{"PATH=/bin", "LAYERED=1"},
			Entrypoint: []string{"/bin/tool"},
			Cmd:        []string{"--flag"},
			WorkingDir: "/home/user",
			User:       "1000:1000",
			Layers:     [][]Entry{base, mid, top},
		},
		arch("amd64", ""),
		arch("arm64", "v8"),
	}
}

// LayeredMerged lists the regular files of the "layered" image after
// merging, with their contents.
func LayeredMerged() map[string]string {
	return map[string]string{
		"bin/tool":        "#!/bin/sh\necho base\n",
		"bin/tool-link":   "#!/bin/sh\necho base\n",
		"bin/suid":        "suid\n",
		"etc/config":      "top config\n",
		"etc/removed":     "re-created\n",
		"etc/xattr":       "x\n",
		"opaque/new":      "after opaque\n",
		"home/user/notes": "mine\n",
	}
}
