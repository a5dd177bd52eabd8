// SPDX-License-Identifier: Apache-2.0

package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// FileKind is the type of a guest file.
type FileKind int

// File kinds.
const (
	KindOther FileKind = iota
	KindFile
	KindDirectory
	KindSymlink
)

func (k FileKind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDirectory:
		return "directory"
	case KindSymlink:
		return "symlink"
	}
	return "other"
}

// FileInfo describes a guest file (symlinks are not followed).
type FileInfo struct {
	Name          string // base name in a listing, the path asked in Stat
	Kind          FileKind
	Size          int64
	Mode          fs.FileMode // permission bits plus the type, setuid, setgid and sticky bits
	UID, GID      uint32
	ModTime       time.Time
	SymlinkTarget string
}

// fileInfo converts a guest-controlled FileInfo; out-of-range values are
// clamped.
func fileInfo(pi *agentpb.FileInfo) FileInfo {
	fi := FileInfo{
		Name: pi.GetName(), UID: pi.GetUid(), GID: pi.GetGid(),
		Mode:          fs.FileMode(pi.GetMode() & 0o777),
		ModTime:       time.Unix(0, pi.GetMtimeUnixNano()),
		SymlinkTarget: pi.GetSymlinkTarget(),
	}
	fi.Size = int64(min(pi.GetSize(), 1<<63-1))
	m := pi.GetMode()
	if m&0o4000 != 0 {
		fi.Mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fi.Mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fi.Mode |= fs.ModeSticky
	}
	switch pi.GetKind() {
	case agentpb.FileKind_FILE_KIND_FILE:
		fi.Kind = KindFile
	case agentpb.FileKind_FILE_KIND_DIRECTORY:
		fi.Kind, fi.Mode = KindDirectory, fi.Mode|fs.ModeDir
	case agentpb.FileKind_FILE_KIND_SYMLINK:
		fi.Kind, fi.Mode = KindSymlink, fi.Mode|fs.ModeSymlink
	default:
		fi.Mode |= fs.ModeIrregular
	}
	return fi
}

func (c *Client) checkFS() error {
	if !c.sess.Has(guestagent.CapFS) {
		return fmt.Errorf("host: guest lacks the %q capability", guestagent.CapFS)
	}
	return nil
}

// fsCall runs a one-shot fs request and returns its result.
func (c *Client) fsCall(ctx context.Context, op string, req *agentpb.FsRequest) (*agentpb.FsResult, error) {
	if err := c.checkFS(); err != nil {
		return nil, err
	}
	st, err := c.open(ctx, kindFS, &agentpb.Frame{Msg: &agentpb.Frame_Fs{Fs: req}})
	if err != nil {
		return nil, fmt.Errorf("host: %s: %w", op, err)
	}
	defer st.abandon(context.Background())
	f, err := st.next(ctx)
	if err != nil {
		return nil, fmt.Errorf("host: %s: %w", op, err)
	}
	switch m := f.Msg.(type) {
	case *agentpb.Frame_FsResult:
		return m.FsResult, nil
	case *agentpb.Frame_Error:
		return nil, guestagent.ErrorFromProto(op, m.Error)
	}
	return nil, guestagent.ProtocolErrorf("unexpected %T", f.Msg)
}

// Stat describes path without following a final symlink.
func (c *Client) Stat(ctx context.Context, path string) (FileInfo, error) {
	r, err := c.fsCall(ctx, "stat", &agentpb.FsRequest{Op: &agentpb.FsRequest_Stat{Stat: &agentpb.FsPath{Path: path}}})
	if err != nil {
		return FileInfo{}, err
	}
	return fileInfo(r.GetInfo()), nil
}

// Mkdir creates path and any missing parents (mkdir -p); perm zero means
// 0755.
func (c *Client) Mkdir(ctx context.Context, path string, perm fs.FileMode) error {
	_, err := c.fsCall(ctx, "mkdir", &agentpb.FsRequest{Op: &agentpb.FsRequest_Mkdir{Mkdir: &agentpb.FsMkdir{Path: path, Mode: uint32(perm.Perm())}}})
	return err
}

// Remove removes a file or an empty directory.
func (c *Client) Remove(ctx context.Context, path string) error {
	_, err := c.fsCall(ctx, "remove", &agentpb.FsRequest{Op: &agentpb.FsRequest_Remove{Remove: &agentpb.FsRemove{Path: path}}})
	return err
}

// RemoveAll removes path and everything below it; a missing path is an
// error matching guestagent.ErrNotFound.
func (c *Client) RemoveAll(ctx context.Context, path string) error {
	_, err := c.fsCall(ctx, "remove", &agentpb.FsRequest{Op: &agentpb.FsRequest_Remove{Remove: &agentpb.FsRemove{Path: path, Recursive: true}}})
	return err
}

// Rename renames (moves) src to dst.
func (c *Client) Rename(ctx context.Context, src, dst string) error {
	_, err := c.fsCall(ctx, "rename", &agentpb.FsRequest{Op: &agentpb.FsRequest_Rename{Rename: &agentpb.FsMove{Src: src, Dst: dst}}})
	return err
}

// Copy copies src to dst inside the guest: a file with its permissions, a
// directory recursively, a symlink as a symlink.
func (c *Client) Copy(ctx context.Context, src, dst string) error {
	_, err := c.fsCall(ctx, "copy", &agentpb.FsRequest{Op: &agentpb.FsRequest_Copy{Copy: &agentpb.FsMove{Src: src, Dst: dst}}})
	return err
}

// List lists a directory (without "." and ".."), in the guest's order.
func (c *Client) List(ctx context.Context, path string) ([]FileInfo, error) {
	if err := c.checkFS(); err != nil {
		return nil, err
	}
	st, err := c.open(ctx, kindList, &agentpb.Frame{Msg: &agentpb.Frame_Fs{Fs: &agentpb.FsRequest{Op: &agentpb.FsRequest_List{List: &agentpb.FsPath{Path: path}}}}})
	if err != nil {
		return nil, fmt.Errorf("host: list: %w", err)
	}
	defer st.abandon(context.Background())
	var out []FileInfo
	for {
		f, err := st.next(ctx)
		if err != nil {
			return nil, fmt.Errorf("host: list: %w", err)
		}
		switch m := f.Msg.(type) {
		case *agentpb.Frame_Entries:
			for _, e := range m.Entries.GetEntries() {
				out = append(out, fileInfo(e))
			}
		case *agentpb.Frame_FsResult:
			return out, nil
		case *agentpb.Frame_Error:
			return nil, guestagent.ErrorFromProto("list", m.Error)
		}
	}
}

// FileReader streams a guest file's contents. Calls are for one goroutine.
type FileReader struct {
	st   *stream
	path string
	buf  []byte
	err  error
}

// OpenReader starts streaming path. Nothing caps the file's size; the
// guest sends only as fast as the reader takes the bytes.
func (c *Client) OpenReader(ctx context.Context, path string) (*FileReader, error) {
	if err := c.checkFS(); err != nil {
		return nil, err
	}
	st, err := c.open(ctx, kindRead, &agentpb.Frame{Msg: &agentpb.Frame_Fs{Fs: &agentpb.FsRequest{Op: &agentpb.FsRequest_Read{Read: &agentpb.FsRead{Path: path}}}}})
	if err != nil {
		return nil, fmt.Errorf("host: read: %w", err)
	}
	return &FileReader{st: st, path: path}, nil
}

// Recv returns the next chunk of the file, or io.EOF at its end.
func (r *FileReader) Recv(ctx context.Context) ([]byte, error) {
	if len(r.buf) > 0 {
		b := r.buf
		r.buf = nil
		return b, nil
	}
	if r.err != nil {
		return nil, r.err
	}
	for {
		f, err := r.st.next(ctx)
		if err != nil {
			if err != io.EOF && ctx.Err() == nil {
				r.err = fmt.Errorf("host: read %s: %w", r.path, err)
				return nil, r.err
			}
			return nil, err
		}
		switch m := f.Msg.(type) {
		case *agentpb.Frame_Data:
			if len(m.Data.GetData()) > 0 {
				return m.Data.GetData(), nil
			}
		case *agentpb.Frame_FsResult:
			r.err = io.EOF
			return nil, io.EOF
		case *agentpb.Frame_Error:
			r.err = guestagent.ErrorFromProto("read", m.Error)
			return nil, r.err
		}
	}
}

// ReadContext reads into b (io.Reader semantics, bounded by ctx).
func (r *FileReader) ReadContext(ctx context.Context, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	chunk, err := r.Recv(ctx)
	if err != nil {
		return 0, err
	}
	n := copy(b, chunk)
	if n < len(chunk) {
		r.buf = chunk[n:]
	}
	return n, nil
}

// Read implements io.Reader; it is not bounded by a context.
func (r *FileReader) Read(b []byte) (int, error) { return r.ReadContext(context.Background(), b) }

// Close stops the transfer. It is idempotent.
func (r *FileReader) Close() error {
	r.st.abandon(context.Background())
	return nil
}

// ReadFile reads a whole guest file.
func (c *Client) ReadFile(ctx context.Context, path string) ([]byte, error) {
	r, err := c.OpenReader(ctx, path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []byte
	for {
		b, err := r.Recv(ctx)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
}

// WriteOptions tune a file write.
type WriteOptions struct {
	// Mode is the file's permission bits; zero means 0644 for a new file
	// and leaves an existing file's mode unchanged.
	Mode fs.FileMode
	// CreateParents creates missing parent directories (0755).
	CreateParents bool
	// Append appends instead of truncating.
	Append bool
}

// FileWriter streams bytes into a guest file. Close commits it.
type FileWriter struct {
	st        *stream
	path      string
	closeOnce sync.Once
	closeErr  error
}

// OpenWriter creates or truncates path and returns a writer for it.
// Nothing caps the file's size; writes block while the guest is behind.
func (c *Client) OpenWriter(ctx context.Context, path string, opts WriteOptions) (*FileWriter, error) {
	if err := c.checkFS(); err != nil {
		return nil, err
	}
	req := &agentpb.FsWrite{Path: path, Mode: uint32(opts.Mode & (fs.ModePerm)), CreateParents: opts.CreateParents, Append: opts.Append}
	if opts.Mode&fs.ModeSetuid != 0 {
		req.Mode |= 0o4000
	}
	if opts.Mode&fs.ModeSetgid != 0 {
		req.Mode |= 0o2000
	}
	if opts.Mode&fs.ModeSticky != 0 {
		req.Mode |= 0o1000
	}
	st, err := c.open(ctx, kindWrite, &agentpb.Frame{Msg: &agentpb.Frame_Fs{Fs: &agentpb.FsRequest{Op: &agentpb.FsRequest_Write{Write: req}}}})
	if err != nil {
		return nil, fmt.Errorf("host: write: %w", err)
	}
	return &FileWriter{st: st, path: path}, nil
}

// early returns the guest's error if it already ended the stream.
func (w *FileWriter) early() error {
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	for _, f := range w.st.q {
		if e := f.GetError(); e != nil {
			return guestagent.ErrorFromProto("write", e)
		}
	}
	if w.st.err != nil {
		return w.st.err
	}
	if w.st.ended || w.st.abandoned {
		return guestagent.ErrClosed
	}
	return nil
}

// WriteContext writes b, bounded by ctx.
func (w *FileWriter) WriteContext(ctx context.Context, b []byte) (int, error) {
	if err := w.early(); err != nil {
		return 0, err
	}
	n, err := w.st.sendData(ctx, agentpb.Channel_CHANNEL_FILE, b)
	if err != nil {
		if e := w.early(); e != nil {
			err = e
		}
	}
	return n, err
}

// Write implements io.Writer; it is not bounded by a context.
func (w *FileWriter) Write(b []byte) (int, error) { return w.WriteContext(context.Background(), b) }

// Close ends the data, waits for the guest to close the file and returns
// its verdict. Later calls return the same result.
func (w *FileWriter) Close(ctx context.Context) error {
	w.closeOnce.Do(func() {
		defer w.st.abandon(context.Background())
		if err := w.early(); err != nil && !errors.Is(err, guestagent.ErrClosed) {
			w.closeErr = err
			return
		}
		if err := w.st.isOpen(); err == nil {
			if err := w.st.write(ctx, &agentpb.Frame{Msg: &agentpb.Frame_CloseWrite{CloseWrite: &agentpb.CloseWrite{}}}); err != nil {
				w.closeErr = fmt.Errorf("host: write %s: %w", w.path, err)
				return
			}
		}
		f, err := w.st.next(ctx)
		if err != nil {
			w.closeErr = fmt.Errorf("host: write %s: %w", w.path, err)
			return
		}
		if e := f.GetError(); e != nil {
			w.closeErr = guestagent.ErrorFromProto("write", e)
		}
	})
	return w.closeErr
}

// Abort abandons the write; the guest stops and keeps what it wrote.
func (w *FileWriter) Abort() {
	w.closeOnce.Do(func() {
		w.closeErr = guestagent.ErrClosed
		w.st.abandon(context.Background())
	})
}

// WriteFile writes data to path.
func (c *Client) WriteFile(ctx context.Context, path string, data []byte, opts WriteOptions) error {
	w, err := c.OpenWriter(ctx, path, opts)
	if err != nil {
		return err
	}
	if _, err := w.WriteContext(ctx, data); err != nil {
		w.Abort()
		return err
	}
	return w.Close(ctx)
}

// Metrics is a sample of the guest's state.
type Metrics struct {
	MemoryTotalBytes, MemoryAvailableBytes            uint64
	DiskPath                                          string
	DiskTotalBytes, DiskFreeBytes, DiskAvailableBytes uint64
	Load1, Load5, Load15                              float64
	Uptime                                            time.Duration
	Processes                                         int
}

// Metrics samples memory, the disk holding diskPath ("" means "/"), load,
// uptime and the process count in the guest.
func (c *Client) Metrics(ctx context.Context, diskPath string) (Metrics, error) {
	if !c.sess.Has(guestagent.CapMetrics) {
		return Metrics{}, fmt.Errorf("host: metrics: guest lacks the %q capability", guestagent.CapMetrics)
	}
	st, err := c.open(ctx, kindMetrics, &agentpb.Frame{Msg: &agentpb.Frame_MetricsRequest{MetricsRequest: &agentpb.MetricsRequest{DiskPath: diskPath}}})
	if err != nil {
		return Metrics{}, fmt.Errorf("host: metrics: %w", err)
	}
	defer st.abandon(context.Background())
	f, err := st.next(ctx)
	if err != nil {
		return Metrics{}, fmt.Errorf("host: metrics: %w", err)
	}
	if e := f.GetError(); e != nil {
		return Metrics{}, guestagent.ErrorFromProto("metrics", e)
	}
	m := f.GetMetrics()
	return Metrics{
		MemoryTotalBytes: m.GetMemoryTotalBytes(), MemoryAvailableBytes: m.GetMemoryAvailableBytes(),
		DiskPath:       m.GetDiskPath(),
		DiskTotalBytes: m.GetDiskTotalBytes(), DiskFreeBytes: m.GetDiskFreeBytes(), DiskAvailableBytes: m.GetDiskAvailableBytes(),
		Load1: m.GetLoad1(), Load5: m.GetLoad5(), Load15: m.GetLoad15(),
		Uptime:    time.Duration(min(m.GetUptimeMs(), uint64(1<<62)/uint64(time.Millisecond))) * time.Millisecond,
		Processes: int(m.GetProcesses()),
	}, nil
}
