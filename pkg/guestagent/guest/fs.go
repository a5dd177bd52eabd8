// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// checkPath validates a host-supplied path: absolute, no NUL byte.
func checkPath(p string) error {
	if !filepath.IsAbs(p) || strings.IndexByte(p, 0) >= 0 {
		return &fs.PathError{Op: "check", Path: p, Err: syscall.EINVAL}
	}
	return nil
}

func done() *agentpb.Frame {
	return &agentpb.Frame{Msg: &agentpb.Frame_FsResult{FsResult: &agentpb.FsResult{}}}
}

// runFS runs one fs stream.
func (c *conn) runFS(st *stream, req *agentpb.FsRequest) {
	var (
		f   *agentpb.Frame
		err error
	)
	switch op := req.Op.(type) {
	case *agentpb.FsRequest_Read:
		f, err = c.fsRead(st, op.Read)
	case *agentpb.FsRequest_Write:
		f, err = c.fsWrite(st, op.Write)
	case *agentpb.FsRequest_List:
		f, err = c.fsList(st, op.List.GetPath())
	case *agentpb.FsRequest_Stat:
		if err = checkPath(op.Stat.GetPath()); err == nil {
			var info *agentpb.FileInfo
			info, err = statInfo(op.Stat.GetPath(), op.Stat.GetPath())
			f = &agentpb.Frame{Msg: &agentpb.Frame_FsResult{FsResult: &agentpb.FsResult{Info: info}}}
		}
	case *agentpb.FsRequest_Mkdir:
		if err = checkPath(op.Mkdir.GetPath()); err == nil {
			mode := fs.FileMode(op.Mkdir.GetMode() & 0o7777)
			if mode == 0 {
				mode = 0o755
			}
			err = os.MkdirAll(op.Mkdir.GetPath(), mode)
			f = done()
		}
	case *agentpb.FsRequest_Remove:
		p := op.Remove.GetPath()
		if err = checkPath(p); err == nil {
			if op.Remove.GetRecursive() {
				if _, err = os.Lstat(p); err == nil {
					err = os.RemoveAll(p)
				}
			} else {
				err = os.Remove(p)
			}
			f = done()
		}
	case *agentpb.FsRequest_Rename:
		if err = checkPath(op.Rename.GetSrc()); err == nil {
			if err = checkPath(op.Rename.GetDst()); err == nil {
				err = os.Rename(op.Rename.GetSrc(), op.Rename.GetDst())
				f = done()
			}
		}
	case *agentpb.FsRequest_Copy:
		if err = checkPath(op.Copy.GetSrc()); err == nil {
			if err = checkPath(op.Copy.GetDst()); err == nil {
				err = copyTree(op.Copy.GetSrc(), op.Copy.GetDst())
				f = done()
			}
		}
	default:
		err = &fs.PathError{Op: "fs", Err: syscall.EINVAL}
	}
	st.finish(f, err)
}

func (c *conn) fsRead(st *stream, req *agentpb.FsRead) (*agentpb.Frame, error) {
	if err := checkPath(req.GetPath()); err != nil {
		return nil, err
	}
	f, err := os.Open(req.GetPath())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if fi.IsDir() {
		return nil, &fs.PathError{Op: "read", Path: req.GetPath(), Err: syscall.EISDIR}
	}
	buf := make([]byte, guestagent.DataChunk)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if err := st.sendData(agentpb.Channel_CHANNEL_FILE, buf[:n]); err != nil {
				return nil, err
			}
		}
		if rerr == io.EOF {
			return done(), nil
		}
		if rerr != nil {
			return nil, rerr
		}
	}
}

func (c *conn) fsWrite(st *stream, req *agentpb.FsWrite) (*agentpb.Frame, error) {
	p := req.GetPath()
	if err := checkPath(p); err != nil {
		return nil, err
	}
	if req.GetCreateParents() {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if req.GetAppend() {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	mode := fs.FileMode(req.GetMode() & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	f, err := os.OpenFile(p, flags, mode)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if req.GetMode() != 0 {
		if err := f.Chmod(mode); err != nil {
			return nil, err
		}
	}
	for {
		b, err := st.readIn(c.ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if _, err := f.Write(b); err != nil {
			return nil, err
		}
		st.consumed(len(b))
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return done(), nil
}

// listBatch bounds the encoded size of one FsEntries frame.
const listBatch = 32 << 10

func (c *conn) fsList(st *stream, dir string) (*agentpb.Frame, error) {
	if err := checkPath(dir); err != nil {
		return nil, err
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	batch := &agentpb.FsEntries{}
	flush := func() error {
		if len(batch.Entries) == 0 {
			return nil
		}
		n := proto.Size(batch)
		for got := 0; got < n; {
			k, err := st.send.Acquire(c.ctx, n-got)
			if err != nil {
				return err
			}
			got += k
		}
		err := st.write(&agentpb.Frame{Msg: &agentpb.Frame_Entries{Entries: batch}})
		batch = &agentpb.FsEntries{}
		return err
	}
	for {
		names, rerr := d.Readdirnames(256)
		for _, name := range names {
			info, err := statInfo(filepath.Join(dir, name), name)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while listing
			} else if err != nil {
				return nil, err
			}
			batch.Entries = append(batch.Entries, info)
			if proto.Size(batch) >= listBatch {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return done(), nil
}

// statInfo describes path (not following a final symlink) under name.
func statInfo(path, name string) (*agentpb.FileInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	info := &agentpb.FileInfo{
		Name:          name,
		Size:          uint64(max(fi.Size(), 0)),
		Mode:          uint32(fi.Mode().Perm()),
		MtimeUnixNano: fi.ModTime().UnixNano(),
	}
	m := fi.Mode()
	if m&fs.ModeSetuid != 0 {
		info.Mode |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		info.Mode |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		info.Mode |= syscall.S_ISVTX
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		info.Uid, info.Gid = sys.Uid, sys.Gid
	}
	switch {
	case m.IsRegular():
		info.Kind = agentpb.FileKind_FILE_KIND_FILE
	case m.IsDir():
		info.Kind = agentpb.FileKind_FILE_KIND_DIRECTORY
	case m&fs.ModeSymlink != 0:
		info.Kind = agentpb.FileKind_FILE_KIND_SYMLINK
		if t, err := os.Readlink(path); err == nil {
			info.SymlinkTarget = t
		}
	}
	return info, nil
}

// copyTree copies src to dst: files with their permissions, directories
// recursively, symlinks as symlinks.
func copyTree(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(t, dst)
	case fi.IsDir():
		if rel, err := filepath.Rel(src, dst); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return &fs.PathError{Op: "copy", Path: dst, Err: syscall.EINVAL}
		}
		if err := os.Mkdir(dst, fi.Mode().Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		return nil
	case fi.Mode().IsRegular():
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	return &fs.PathError{Op: "copy", Path: src, Err: fmt.Errorf("%w: not a file, directory or symlink", syscall.EINVAL)}
}
