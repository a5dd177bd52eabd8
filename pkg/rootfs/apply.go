// SPDX-License-Identifier: Apache-2.0

package rootfs

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs/erofs"
)

// OCI whiteout names (image-spec layer.md, "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

const paxXattr = "SCHILY.xattr."

// Apply reads one uncompressed layer tar stream, which comes from a
// registry and is hostile, and applies it on top of the layers applied
// before. For each entry it checks the name (splitPath), resolves the parent
// inside the tree (resolveDir), checks owners, device numbers and the size
// against Options.MaxDataBytes, and copies file contents to the spill file.
//
// Semantics, following the OCI image spec and containerd's apply:
//   - .wh.<name> deletes <name> of a lower layer; .wh..wh..opq deletes every
//     lower-layer entry of its directory; names written by the same layer
//     stay, in whatever order the tar lists them. Other .wh..wh.* names
//     (AUFS metadata) are skipped and counted.
//   - a later entry of the same name replaces an earlier one (last wins),
//     except that a directory over a directory keeps the children and takes
//     the new metadata;
//   - a hard link binds the name to the inode its target names now (within
//     the tree, lower layers included; the target's final symlink is not
//     followed). A missing target or a directory target is an error,
//     ErrHardlinkTarget, as link(2) would fail for containerd: an image
//     that needs it is broken, and skipping would silently lose a file;
//   - symlinks are stored as they are and never followed by the host; a
//     parent path through a symlink resolves inside the tree;
//   - owners are numeric (uname/gname ignored), mode bits include setuid,
//     setgid and sticky, mtimes keep nanoseconds, xattrs come from PAX
//     SCHILY.xattr.* records (those EROFS cannot name are skipped and
//     counted).
//
// Errors wrap an *EntryError naming the layer and entry. After an error the
// tree is broken: every later call returns ErrClosed, and it must be closed.
func (t *Tree) Apply(ctx context.Context, layer io.Reader) error {
	if t.broken {
		return ErrClosed
	}
	tr := tar.NewReader(layer)
	for {
		if err := ctx.Err(); err != nil {
			t.broken = true
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			t.broken = true
			return fmt.Errorf("rootfs: layer %d: read tar: %w", t.layer, err)
		}
		t.st.Entries++
		if err := t.applyEntry(hdr, tr); err != nil {
			t.broken = true
			name := hdr.Name
			if len(name) > 256 {
				name = name[:256] + "..."
			}
			return &EntryError{Layer: t.layer, Name: name, Err: err}
		}
	}
	t.layer++
	t.st.Layers++
	return nil
}

func (t *Tree) applyEntry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		t.st.SkippedEntries++
		return nil
	}
	comps, err := splitPath(hdr.Name)
	if err != nil {
		return err
	}
	mtime := int64(0)
	if !hdr.ModTime.IsZero() {
		mtime = hdr.ModTime.Unix()
	}
	if len(comps) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: the root must be a directory", ErrUnsafePath)
		}
		return t.setMeta(t.root, hdr)
	}
	for _, c := range comps[:len(comps)-1] {
		if strings.HasPrefix(c, whiteoutMeta) {
			t.st.SkippedEntries++ // inside an AUFS metadata directory
			return nil
		}
	}
	base := comps[len(comps)-1]
	dirComps := comps[:len(comps)-1]

	if name, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		switch {
		case base == whiteoutOpaque:
			t.st.OpaqueDirs++
			dir, err := t.resolveDir(dirComps, true, mtime)
			if err != nil {
				return err
			}
			t.purgeLower(dir)
			return nil
		case strings.HasPrefix(base, whiteoutMeta):
			t.st.SkippedEntries++
			return nil
		case name == "" || name == "." || name == "..":
			return fmt.Errorf("%w: whiteout of %q", ErrUnsafePath, name)
		}
		t.st.Whiteouts++
		dir, err := t.resolveDir(dirComps, false, mtime)
		if err != nil || dir == nil {
			return err
		}
		if b, ok := dir.children[name]; ok && b.layer < t.layer {
			delete(dir.children, name)
		}
		return nil
	}

	dir, err := t.resolveDir(dirComps, true, mtime)
	if err != nil {
		return err
	}
	old, exists := dir.children[base]

	var n *node
	switch hdr.Typeflag {
	case tar.TypeDir:
		if exists && old.n.isDir() {
			n = old.n
		} else if n, err = t.newNode(erofs.ModeDir); err != nil {
			return err
		}
	case tar.TypeReg, tar.TypeCont: // archive/tar turns TypeRegA into TypeReg
		if n, err = t.newNode(erofs.ModeRegular); err != nil {
			return err
		}
		if err := t.spillFile(n, hdr, r); err != nil {
			return err
		}
	case tar.TypeSymlink:
		switch {
		case hdr.Linkname == "":
			return fmt.Errorf("%w: empty symlink target", ErrUnsupportedEntry)
		case len(hdr.Linkname) >= maxPath:
			return fmt.Errorf("%w: symlink target of %d bytes", ErrNameTooLong, len(hdr.Linkname))
		case strings.IndexByte(hdr.Linkname, 0) >= 0:
			return fmt.Errorf("%w: NUL in symlink target", ErrUnsupportedEntry)
		}
		if n, err = t.newNode(erofs.ModeSymlink); err != nil {
			return err
		}
		n.target = hdr.Linkname
	case tar.TypeLink:
		target, err := t.lookupLink(hdr.Linkname)
		if err != nil {
			return err
		}
		dir.children[base] = binding{target, t.layer}
		return nil
	case tar.TypeChar, tar.TypeBlock:
		if hdr.Devmajor < 0 || hdr.Devmajor >= 1<<12 || hdr.Devminor < 0 || hdr.Devminor >= 1<<20 {
			return fmt.Errorf("%w: device %d:%d beyond a 32-bit dev_t", ErrUnsupportedEntry, hdr.Devmajor, hdr.Devminor)
		}
		typ := uint32(erofs.ModeChar)
		if hdr.Typeflag == tar.TypeBlock {
			typ = erofs.ModeBlock
		}
		if n, err = t.newNode(typ); err != nil {
			return err
		}
		n.major, n.minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeFifo:
		if n, err = t.newNode(erofs.ModeFifo); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: type %q", ErrUnsupportedEntry, hdr.Typeflag)
	}
	if err := t.setMeta(n, hdr); err != nil {
		return err
	}
	dir.children[base] = binding{n, t.layer}
	return nil
}

// purgeLower removes from dir every name a lower layer wrote, and does the
// same inside the directories this layer wrote, so that a directory merged
// with its lower self by this layer loses the lower contents too (as
// containerd's apply removes every path under an opaque directory that the
// layer did not unpack).
func (t *Tree) purgeLower(dir *node) {
	for k, b := range dir.children {
		switch {
		case b.layer < t.layer:
			delete(dir.children, k)
		case b.n.isDir():
			t.purgeLower(b.n)
		}
	}
}

// lookupLink returns the inode a hard link's target names, without
// following a final symlink (link(2) semantics).
func (t *Tree) lookupLink(linkname string) (*node, error) {
	comps, err := splitPath(linkname)
	if err != nil {
		return nil, fmt.Errorf("%w: target %q: %w", ErrHardlinkTarget, linkname, err)
	}
	if len(comps) == 0 {
		return nil, fmt.Errorf("%w: target is the root", ErrHardlinkTarget)
	}
	dir, err := t.resolveDir(comps[:len(comps)-1], false, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: target %q: %w", ErrHardlinkTarget, linkname, err)
	}
	var b binding
	ok := false
	if dir != nil {
		b, ok = dir.children[comps[len(comps)-1]]
	}
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: target %q does not exist", ErrHardlinkTarget, linkname)
	case b.n.isDir():
		return nil, fmt.Errorf("%w: target %q is a directory", ErrHardlinkTarget, linkname)
	}
	return b.n, nil
}

// setMeta copies owner, mode bits, mtime and xattrs from the header.
func (t *Tree) setMeta(n *node, hdr *tar.Header) error {
	if hdr.Uid < 0 || int64(hdr.Uid) > math.MaxUint32 || hdr.Gid < 0 || int64(hdr.Gid) > math.MaxUint32 {
		return fmt.Errorf("%w: owner %d:%d outside 0..2^32-1", ErrUnsupportedEntry, hdr.Uid, hdr.Gid)
	}
	n.mode = n.mode&erofs.ModeTypeMask | uint32(hdr.Mode)&erofs.ModePermMask
	n.uid, n.gid = uint32(hdr.Uid), uint32(hdr.Gid)
	n.mtime, n.mtimeNsec = 0, 0
	if !hdr.ModTime.IsZero() {
		n.mtime, n.mtimeNsec = hdr.ModTime.Unix(), uint32(hdr.ModTime.Nanosecond())
	}
	n.xattrs = n.xattrs[:0]
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if erofs.CheckXattr(name, v) != nil {
			t.st.SkippedXattrs++
			continue
		}
		n.xattrs = append(n.xattrs, erofs.Xattr{Name: name, Value: v})
	}
	slices.SortFunc(n.xattrs, func(a, b erofs.Xattr) int { return strings.Compare(a.Name, b.Name) })
	return nil
}

// spillFile appends a regular file's contents to the spill file. Layers
// are streams (often decompressed on the fly from a registry blob) that
// cannot be read twice, and the image is written after the last layer, so
// contents are kept on disk, not in memory; overwritten files waste spill
// space but never image space.
func (t *Tree) spillFile(n *node, hdr *tar.Header, r io.Reader) error {
	if hdr.Size < 0 {
		return fmt.Errorf("%w: negative size", ErrUnsupportedEntry)
	}
	if max := t.opts.maxData(); hdr.Size > max-t.spillSize {
		return fmt.Errorf("%w: %d bytes of file data after %d exceed %d", ErrLimit, hdr.Size, t.spillSize, max)
	}
	n.size, n.off = hdr.Size, t.spillSize
	if hdr.Size == 0 {
		return nil
	}
	if t.spill == nil {
		if err := t.openSpill(); err != nil {
			return err
		}
	}
	if t.copyBuf == nil {
		t.copyBuf = make([]byte, 256<<10)
	}
	m, err := io.CopyBuffer(t.spillW, io.LimitReader(r, hdr.Size), t.copyBuf)
	t.spillSize += m
	t.st.DataBytes += m
	if err != nil {
		return fmt.Errorf("rootfs: copy contents: %w", err)
	}
	if m != hdr.Size {
		return fmt.Errorf("rootfs: copy contents: %w after %d of %d bytes", io.ErrUnexpectedEOF, m, hdr.Size)
	}
	return nil
}

func (t *Tree) openSpill() error {
	f, err := os.CreateTemp(t.opts.TempDir, "rootfs-spill-*")
	if err != nil {
		return fmt.Errorf("rootfs: spill file: %w", err)
	}
	t.spill = f
	// Unlink at once where the OS allows it, so nothing is left behind
	// even if the process dies; otherwise Close removes it.
	if os.Remove(f.Name()) != nil {
		t.spillPath = f.Name()
	}
	t.spillW = bufio.NewWriterSize(f, 1<<20)
	return nil
}
