// SPDX-License-Identifier: Apache-2.0

package rootfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs/erofs"
)

// Limits of names, from Linux: PATH_MAX (4096, with its NUL) and NAME_MAX.
const (
	maxPath     = 4096
	maxNameLen  = erofs.MaxNameLen
	maxSymlinks = 40 // MAXSYMLINKS in include/linux/namei.h
)

// Defaults of Options.
const (
	DefaultMaxDataBytes = 64 << 30
	DefaultMaxEntries   = 1 << 21
)

// Options tune a Tree and Build. The zero value is ready to use.
type Options struct {
	// TempDir holds the spill file of file contents; "" means os.TempDir().
	TempDir string
	// MaxDataBytes bounds the regular-file bytes read from all layers
	// together, overwritten and deleted files included; 0 means
	// DefaultMaxDataBytes (64 GiB). A sparse entry counts its full size.
	MaxDataBytes int64
	// MaxEntries bounds the number of inodes ever created in the tree;
	// 0 means DefaultMaxEntries (2 Mi).
	MaxEntries int
	// Image tunes the EROFS writer (volume UUID and name).
	Image erofs.Options
}

func (o *Options) maxData() int64 {
	if o.MaxDataBytes > 0 {
		return o.MaxDataBytes
	}
	return DefaultMaxDataBytes
}

func (o *Options) maxEntries() int {
	if o.MaxEntries > 0 {
		return o.MaxEntries
	}
	return DefaultMaxEntries
}

// Stats counts what a Tree applied and wrote.
type Stats struct {
	Layers         int   // layers applied
	Entries        int   // tar headers read
	Whiteouts      int   // .wh.<name> entries (whether or not they hid something)
	OpaqueDirs     int   // .wh..wh..opq entries
	SkippedEntries int   // AUFS metadata (.wh..wh.*) and PAX global headers
	SkippedXattrs  int   // xattrs EROFS cannot name (see erofs.CheckXattr)
	DataBytes      int64 // regular-file bytes spilled, overwritten files included
	Image          erofs.Stats
}

// node is one inode of the tree. Hard links are several bindings of one
// *node; a directory has exactly one binding.
type node struct {
	mode         uint32 // erofs.Mode* type bits | permission bits
	uid, gid     uint32
	mtime        int64
	mtimeNsec    uint32
	xattrs       []erofs.Xattr
	size         int64  // regular files
	off          int64  // regular files: offset of the contents in the spill file
	target       string // symlinks
	major, minor uint32 // devices
	children     map[string]binding
}

func (n *node) isDir() bool { return n.mode&erofs.ModeTypeMask == erofs.ModeDir }

// binding is a directory entry: the inode and the layer that last wrote the
// name. Whiteouts and opaque markers only remove names of lower layers (OCI
// image spec, layer.md: "Whiteout files MUST only apply to resources in
// lower/parent layers").
type binding struct {
	n     *node
	layer int
}

// Tree is a root filesystem being assembled in memory from layer tar
// streams. Metadata lives in memory; regular-file contents go to a spill
// file that the Tree owns (unlinked at creation where the OS allows, removed
// by Close otherwise). A Tree is not safe for concurrent use.
type Tree struct {
	opts      Options
	root      *node
	spill     *os.File
	spillPath string // set while the spill file still has a name
	spillW    *bufio.Writer
	spillSize int64
	inodes    int
	layer     int
	st        Stats
	broken    bool
	copyBuf   []byte
}

// NewTree returns an empty tree: a root directory with mode 0755, owned by
// 0:0, mtime 0, until a layer's "./" entry says otherwise.
func NewTree(opts Options) *Tree {
	return &Tree{
		opts: opts,
		root: &node{mode: erofs.ModeDir | 0o755, children: map[string]binding{}},
	}
}

// Stats returns the counts so far.
func (t *Tree) Stats() Stats { return t.st }

// Close removes the spill file. It is idempotent.
func (t *Tree) Close() error {
	t.broken = true
	var errs []error
	if t.spill != nil {
		errs = append(errs, t.spill.Close())
		t.spill = nil
	}
	if t.spillPath != "" {
		errs = append(errs, os.Remove(t.spillPath))
		t.spillPath = ""
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rootfs: close spill file: %w", err)
	}
	return nil
}

// WriteImage writes the EROFS image of the tree to out (see erofs.Write).
// It may be called more than once; the tree is unchanged.
func (t *Tree) WriteImage(ctx context.Context, out io.Writer) (Stats, error) {
	if t.broken {
		return t.st, ErrClosed
	}
	if t.spillW != nil {
		if err := t.spillW.Flush(); err != nil {
			return t.st, fmt.Errorf("rootfs: spill file: %w", err)
		}
	}
	memo := make(map[*node]*erofs.Inode, t.inodes)
	st, err := erofs.Write(ctx, out, t.convert(t.root, memo), t.opts.Image)
	t.st.Image = st
	if err != nil {
		return t.st, fmt.Errorf("rootfs: write image: %w", err)
	}
	return t.st, nil
}

func (t *Tree) convert(n *node, memo map[*node]*erofs.Inode) *erofs.Inode {
	if in, ok := memo[n]; ok {
		return in
	}
	in := &erofs.Inode{
		Mode: n.mode, UID: n.uid, GID: n.gid,
		Mtime: n.mtime, MtimeNsec: n.mtimeNsec,
		Xattrs: n.xattrs, Size: n.size, Target: n.target,
		Major: n.major, Minor: n.minor,
	}
	memo[n] = in
	if n.size > 0 {
		in.Data = io.NewSectionReader(t.spill, n.off, n.size)
	}
	if n.isDir() {
		in.Entries = make([]erofs.Entry, 0, len(n.children))
		for name, b := range n.children {
			in.Entries = append(in.Entries, erofs.Entry{Name: name, Inode: t.convert(b.n, memo)})
		}
	}
	return in
}

// splitPath turns a tar name into path components. It rejects what could
// name something outside the tree or confuse the image: absolute names, ".."
// components, NUL bytes, over-long names; "." and empty components are
// dropped, so "./a//b/" is {"a", "b"} and "./" is the root (no components).
func splitPath(name string) ([]string, error) {
	switch {
	case name == "":
		return nil, fmt.Errorf("%w: empty name", ErrUnsafePath)
	case len(name) > maxPath:
		return nil, fmt.Errorf("%w: path of %d bytes exceeds %d", ErrNameTooLong, len(name), maxPath)
	case strings.IndexByte(name, 0) >= 0:
		return nil, fmt.Errorf("%w: NUL in name", ErrUnsafePath)
	case name[0] == '/':
		return nil, fmt.Errorf("%w: absolute name", ErrUnsafePath)
	}
	var comps []string
	for c := range strings.SplitSeq(name, "/") {
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			return nil, fmt.Errorf("%w: \"..\" component", ErrUnsafePath)
		case len(c) > maxNameLen:
			return nil, fmt.Errorf("%w: component of %d bytes exceeds %d", ErrNameTooLong, len(c), maxNameLen)
		}
		comps = append(comps, c)
	}
	return comps, nil
}

// resolveDir returns the directory that comps name, starting at the root.
// Symlinks met on the way are followed inside the tree only, with the
// kernel's chroot semantics: an absolute target restarts at the root and
// ".." never climbs above it; after 40 hops it gives up with ErrSymlinkLoop.
// Missing directories are created (mode 0755, owner 0:0, mtime of the
// entry, as containerd's MkdirAll does) when create is set; otherwise a
// missing component returns nil and no error.
func (t *Tree) resolveDir(comps []string, create bool, mtime int64) (*node, error) {
	stack := []*node{t.root}
	todo := slices.Clone(comps)
	slices.Reverse(todo)
	hops := 0
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := stack[len(stack)-1]
		b, ok := cur.children[c]
		if !ok {
			if !create {
				return nil, nil
			}
			if len(c) > maxNameLen {
				return nil, fmt.Errorf("%w: component of %d bytes exceeds %d (via a symlink)", ErrNameTooLong, len(c), maxNameLen)
			}
			n, err := t.newNode(erofs.ModeDir | 0o755)
			if err != nil {
				return nil, err
			}
			n.mtime = mtime
			cur.children[c] = binding{n, t.layer}
			stack = append(stack, n)
			continue
		}
		switch b.n.mode & erofs.ModeTypeMask {
		case erofs.ModeDir:
			stack = append(stack, b.n)
		case erofs.ModeSymlink:
			hops++
			if hops > maxSymlinks {
				return nil, ErrSymlinkLoop
			}
			if strings.HasPrefix(b.n.target, "/") {
				stack = stack[:1]
			}
			parts := strings.Split(b.n.target, "/")
			slices.Reverse(parts)
			todo = append(todo, parts...)
		default:
			return nil, fmt.Errorf("%w: %q", ErrNotDir, c)
		}
	}
	return stack[len(stack)-1], nil
}

func (t *Tree) newNode(mode uint32) (*node, error) {
	if t.inodes >= t.opts.maxEntries() {
		return nil, fmt.Errorf("%w: more than %d inodes", ErrLimit, t.opts.maxEntries())
	}
	t.inodes++
	n := &node{mode: mode}
	if mode&erofs.ModeTypeMask == erofs.ModeDir {
		n.children = map[string]binding{}
	}
	return n, nil
}
