// SPDX-License-Identifier: Apache-2.0

package blk

import (
	"fmt"
	"io"
	"os"
)

// Backend is the host side of a disk: a flat array of Size bytes that the
// device reads and writes at sector-aligned offsets inside it. A raw image
// file is one backend (what Config.Path and Config.File give); a disk
// image format such as qcow2 (package qcow2's Image) is another.
//
// The device calls its methods with its own lock held, so one at a time.
type Backend interface {
	// ReadAt reads len(p) bytes at off, or returns an error.
	io.ReaderAt
	// WriteAt writes len(p) bytes at off, or returns an error. It is
	// never called on a read-only device.
	io.WriterAt
	// Sync makes completed writes durable (VIRTIO_BLK_T_FLUSH). It is
	// never called on a read-only device.
	Sync() error
	// Size returns the disk size in bytes. It must not change; the
	// device reads it once, in New.
	Size() uint64
	// Close releases the backend; the device calls it once, from Close.
	io.Closer
}

// rawFile is a raw image file as a Backend: the disk is the file, and its
// size is fixed when it is opened.
type rawFile struct {
	*os.File
	size uint64
}

// newRawFile measures f and returns it as a Backend.
func newRawFile(f *os.File) (*rawFile, error) {
	// Seek rather than Stat: a block device reports size 0 in Stat. The
	// offset does not matter afterwards, every access is positioned.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("blk: size of %s: %w", f.Name(), err)
	}
	return &rawFile{File: f, size: uint64(size)}, nil
}

// Size implements Backend.
func (r *rawFile) Size() uint64 { return r.size }
