// SPDX-License-Identifier: Apache-2.0

package cpio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Mode bits of the file type, as in the cpio header (and <sys/stat.h>).
const (
	typeDir     = 0o040000
	typeRegular = 0o100000
	typeSymlink = 0o120000
	typeChar    = 0o020000
)

// newcMagic opens every newc header; trailerName closes the archive.
const (
	newcMagic   = "070701"
	trailerName = "TRAILER!!!"
	headerLen   = 110
)

// Writer writes a newc archive. Entries are written in the order they are
// added; parent directories must be added before their contents (the kernel
// does not create missing parents). Close writes the trailer.
type Writer struct {
	w      io.Writer
	ino    uint32
	err    error
	closed bool
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

// header describes one entry.
type header struct {
	Name  string      // path inside the archive, without a leading slash
	Mode  fs.FileMode // permission bits (and setuid/setgid/sticky)
	UID   uint32
	GID   uint32
	Size  int64  // bytes of data that follow (files and symlink targets)
	Major uint32 // device numbers, for character devices
	Minor uint32
	kind  uint32
}

// Dir adds a directory.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.write(header{Name: name, Mode: perm, kind: typeDir}, nil)
}

// File adds a regular file with the given contents.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.write(header{Name: name, Mode: perm, Size: int64(len(data)), kind: typeRegular}, strings.NewReader(string(data)))
}

// FileFrom adds a regular file of size bytes read from r.
func (w *Writer) FileFrom(name string, perm fs.FileMode, size int64, r io.Reader) error {
	return w.write(header{Name: name, Mode: perm, Size: size, kind: typeRegular}, r)
}

// Symlink adds a symbolic link name -> target.
func (w *Writer) Symlink(name, target string) error {
	return w.write(header{Name: name, Mode: 0o777, Size: int64(len(target)), kind: typeSymlink}, strings.NewReader(target))
}

// CharDevice adds a character device node.
func (w *Writer) CharDevice(name string, perm fs.FileMode, major, minor uint32) error {
	return w.write(header{Name: name, Mode: perm, Major: major, Minor: minor, kind: typeChar}, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	w.ino = 0
	return w.write(header{Name: trailerName}, nil)
}

func (w *Writer) write(h header, data io.Reader) error {
	if w.err != nil {
		return w.err
	}
	if w.closed && h.Name != trailerName {
		return errors.New("cpio: write after close")
	}
	name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
	if h.Name == trailerName {
		name = trailerName
	}
	if name == "" {
		name = "."
	}
	if h.Size < 0 || h.Size > 0xffffffff {
		return w.fail(fmt.Errorf("cpio: %s: size %d does not fit the newc header", name, h.Size))
	}
	ino := w.ino
	if ino != 0 {
		w.ino++
	}
	mode := h.kind | uint32(h.Mode.Perm())
	if h.Mode&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if h.Mode&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if h.Mode&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	nlink := uint32(1)
	if h.kind == typeDir {
		nlink = 2
	}
	// newc header: magic, then 13 fields of 8 hex digits: ino, mode, uid,
	// gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
	// rdevminor, namesize (with the NUL), check.
	hdr := fmt.Sprintf("%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		newcMagic, ino, mode, h.UID, h.GID, nlink, 0, uint32(h.Size), 0, 0, h.Major, h.Minor, len(name)+1, 0)
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.w.Write(buf); err != nil {
		return w.fail(fmt.Errorf("cpio: %s: %w", name, err))
	}
	if h.Size > 0 {
		n, err := io.CopyN(w.w, data, h.Size)
		if err != nil {
			return w.fail(fmt.Errorf("cpio: %s: wrote %d of %d bytes: %w", name, n, h.Size, err))
		}
		if _, err := w.w.Write(make([]byte, pad4(int(h.Size)))); err != nil {
			return w.fail(fmt.Errorf("cpio: %s: %w", name, err))
		}
	}
	return nil
}

func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

// pad4 is the number of NUL bytes that bring n to a multiple of four.
func pad4(n int) int { return (4 - n%4) % 4 }
