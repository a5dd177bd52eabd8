// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

// FsEntryKind is the kind of a guest file.
type FsEntryKind string

// Entry kinds.
const (
	FsEntryKindFile      FsEntryKind = "file"
	FsEntryKindDirectory FsEntryKind = "directory"
	FsEntryKindSymlink   FsEntryKind = "symlink"
	FsEntryKindOther     FsEntryKind = "other"
)

// FsEntry is one entry of a directory listing.
type FsEntry struct {
	Path string
	Kind FsEntryKind
	Size int64
	Mode uint32
	// ModTime is the modification time.
	ModTime time.Time
}

// FsStat describes a guest file (symlinks are not followed).
type FsStat struct {
	Path    string
	Size    int64
	Mode    uint32
	ModTime time.Time
	IsDir   bool
	// Kind, UID, GID and SymlinkTarget are additions to upstream's Go
	// struct.
	Kind          FsEntryKind
	UID, GID      uint32
	SymlinkTarget string
}

// SandboxFSOps operates on the running guest's file system. Paths are
// absolute guest paths.
type SandboxFSOps struct {
	s *Sandbox
}

// FS returns the file operations of the sandbox.
func (s *Sandbox) FS() *SandboxFSOps { return &SandboxFSOps{s: s} }

func (f *SandboxFSOps) client(ctx context.Context) (*host.Client, error) {
	if err := f.s.check(ctx); err != nil {
		return nil, err
	}
	c, err := f.s.sb.Agent()
	if err != nil {
		return nil, wrap(err)
	}
	return c, nil
}

func entryKind(k host.FileKind) FsEntryKind {
	switch k {
	case host.KindFile:
		return FsEntryKindFile
	case host.KindDirectory:
		return FsEntryKindDirectory
	case host.KindSymlink:
		return FsEntryKindSymlink
	}
	return FsEntryKindOther
}

// Read returns the whole file; nothing caps its size.
func (f *SandboxFSOps) Read(ctx context.Context, p string) ([]byte, error) {
	c, err := f.client(ctx)
	if err != nil {
		return nil, err
	}
	b, err := c.ReadFile(ctx, p)
	return b, wrap(err)
}

// ReadString returns the whole file as a string.
func (f *SandboxFSOps) ReadString(ctx context.Context, p string) (string, error) {
	b, err := f.Read(ctx, p)
	return string(b), err
}

// Write creates or truncates the file and writes data (parents created).
func (f *SandboxFSOps) Write(ctx context.Context, p string, data []byte) error {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	return wrap(c.WriteFile(ctx, p, data, host.WriteOptions{CreateParents: true}))
}

// WriteString is Write of a string.
func (f *SandboxFSOps) WriteString(ctx context.Context, p, data string) error {
	return f.Write(ctx, p, []byte(data))
}

// List lists a directory.
func (f *SandboxFSOps) List(ctx context.Context, p string) ([]FsEntry, error) {
	c, err := f.client(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := c.List(ctx, p)
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]FsEntry, 0, len(infos))
	for _, fi := range infos {
		out = append(out, FsEntry{
			Path: path.Join(p, fi.Name), Kind: entryKind(fi.Kind), Size: fi.Size,
			Mode: uint32(fi.Mode.Perm()), ModTime: fi.ModTime,
		})
	}
	return out, nil
}

// Stat describes the file at p.
func (f *SandboxFSOps) Stat(ctx context.Context, p string) (*FsStat, error) {
	c, err := f.client(ctx)
	if err != nil {
		return nil, err
	}
	fi, err := c.Stat(ctx, p)
	if err != nil {
		return nil, wrap(err)
	}
	return &FsStat{
		Path: p, Size: fi.Size, Mode: uint32(fi.Mode.Perm()), ModTime: fi.ModTime,
		IsDir: fi.Kind == host.KindDirectory, Kind: entryKind(fi.Kind),
		UID: fi.UID, GID: fi.GID, SymlinkTarget: fi.SymlinkTarget,
	}, nil
}

// Exists reports whether p exists.
func (f *SandboxFSOps) Exists(ctx context.Context, p string) (bool, error) {
	_, err := f.Stat(ctx, p)
	if err == nil {
		return true, nil
	}
	if IsKind(err, ErrPathNotFound) {
		return false, nil
	}
	return false, err
}

// Mkdir creates the directory and its parents.
func (f *SandboxFSOps) Mkdir(ctx context.Context, p string) error {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	return wrap(c.Mkdir(ctx, p, 0o755))
}

// Remove removes a file or an empty directory.
func (f *SandboxFSOps) Remove(ctx context.Context, p string) error {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	return wrap(c.Remove(ctx, p))
}

// RemoveDir removes a directory and everything in it.
func (f *SandboxFSOps) RemoveDir(ctx context.Context, p string) error {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	return wrap(c.RemoveAll(ctx, p))
}

// Rename moves src to dst inside the guest.
func (f *SandboxFSOps) Rename(ctx context.Context, src, dst string) error {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	return wrap(c.Rename(ctx, src, dst))
}

// Copy copies src to dst inside the guest.
func (f *SandboxFSOps) Copy(ctx context.Context, src, dst string) error {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	return wrap(c.Copy(ctx, src, dst))
}

// CopyFromHost copies the host file hostPath to guestPath, streamed, with
// the host file's permission bits.
func (f *SandboxFSOps) CopyFromHost(ctx context.Context, hostPath, guestPath string) error {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	src, err := os.Open(hostPath)
	if err != nil {
		return &Error{Kind: ErrIO, Message: fmt.Sprintf("copy from host: %v", err), Cause: err}
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return &Error{Kind: ErrIO, Message: fmt.Sprintf("copy from host: %v", err), Cause: err}
	}
	if !fi.Mode().IsRegular() {
		return &Error{Kind: ErrInvalidArgument, Message: fmt.Sprintf("copy from host: %s is not a regular file", hostPath)}
	}
	w, err := c.OpenWriter(ctx, guestPath, host.WriteOptions{Mode: fi.Mode().Perm(), CreateParents: true})
	if err != nil {
		return wrap(err)
	}
	if _, err := io.Copy(writerCtx{ctx, w}, src); err != nil {
		w.Abort()
		return wrap(err)
	}
	return wrap(w.Close(ctx))
}

// CopyToHost copies the guest file guestPath to hostPath (created or
// truncated, written through a temporary file and renamed).
func (f *SandboxFSOps) CopyToHost(ctx context.Context, guestPath, hostPath string) (err error) {
	c, err := f.client(ctx)
	if err != nil {
		return err
	}
	r, err := c.OpenReader(ctx, guestPath)
	if err != nil {
		return wrap(err)
	}
	defer r.Close()
	tmp, err := os.CreateTemp(filepath.Dir(hostPath), "."+filepath.Base(hostPath)+".*.tmp")
	if err != nil {
		return &Error{Kind: ErrIO, Message: fmt.Sprintf("copy to host: %v", err), Cause: err}
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	_, err = io.Copy(tmp, readerCtx{ctx, r})
	if err = errors.Join(err, tmp.Close()); err != nil {
		return wrap(err)
	}
	if err = os.Rename(tmp.Name(), hostPath); err != nil {
		return &Error{Kind: ErrIO, Message: fmt.Sprintf("copy to host: %v", err), Cause: err}
	}
	return nil
}

// FsReadStream streams a guest file.
type FsReadStream struct {
	r *host.FileReader
}

// ReadStream opens the file for streaming.
func (f *SandboxFSOps) ReadStream(ctx context.Context, p string) (*FsReadStream, error) {
	c, err := f.client(ctx)
	if err != nil {
		return nil, err
	}
	r, err := c.OpenReader(ctx, p)
	if err != nil {
		return nil, wrap(err)
	}
	return &FsReadStream{r: r}, nil
}

// Recv returns the next chunk; nil, nil at the end.
func (s *FsReadStream) Recv(ctx context.Context) ([]byte, error) {
	b, err := s.r.Recv(ctx)
	if err == io.EOF {
		return nil, nil
	}
	return b, wrap(err)
}

// Read implements io.Reader.
func (s *FsReadStream) Read(p []byte) (int, error) { return s.r.Read(p) }

// WriteTo copies the rest of the file to w (which it does not close).
func (s *FsReadStream) WriteTo(w io.Writer) (int64, error) {
	return s.CopyTo(context.Background(), w)
}

// CopyTo is WriteTo bounded by ctx.
func (s *FsReadStream) CopyTo(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	for {
		b, err := s.Recv(ctx)
		if err != nil {
			return n, err
		}
		if b == nil {
			return n, nil
		}
		m, err := w.Write(b)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// Close releases the stream.
func (s *FsReadStream) Close() error { return wrap(s.r.Close()) }

// FsWriteStream streams into a guest file; Close commits it.
type FsWriteStream struct {
	w *host.FileWriter
}

// WriteStream creates or truncates the file (parents created) for
// streaming.
func (f *SandboxFSOps) WriteStream(ctx context.Context, p string) (*FsWriteStream, error) {
	c, err := f.client(ctx)
	if err != nil {
		return nil, err
	}
	w, err := c.OpenWriter(ctx, p, host.WriteOptions{CreateParents: true})
	if err != nil {
		return nil, wrap(err)
	}
	return &FsWriteStream{w: w}, nil
}

// Write implements io.Writer.
func (s *FsWriteStream) Write(p []byte) (int, error) { return s.WriteCtx(context.Background(), p) }

// WriteCtx is Write bounded by ctx.
func (s *FsWriteStream) WriteCtx(ctx context.Context, p []byte) (int, error) {
	n, err := s.w.WriteContext(ctx, p)
	return n, wrap(err)
}

// Close commits the file; it must be called.
func (s *FsWriteStream) Close(ctx context.Context) error { return wrap(s.w.Close(ctx)) }

type writerCtx struct {
	ctx context.Context
	w   *host.FileWriter
}

func (w writerCtx) Write(p []byte) (int, error) { return w.w.WriteContext(w.ctx, p) }

type readerCtx struct {
	ctx context.Context
	r   *host.FileReader
}

func (r readerCtx) Read(p []byte) (int, error) { return r.r.ReadContext(r.ctx, p) }
