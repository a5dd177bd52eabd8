// SPDX-License-Identifier: Apache-2.0

package ext4fmt

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Limits on Format's inputs.
const (
	// MinSize is the smallest image Format writes: 8 MiB, one block group
	// with room for data beyond the metadata.
	MinSize = 8 << 20
	// MaxSize is the largest image: 16 TiB, the limit of 32-bit block
	// numbers with 4096-byte blocks (without the 64bit feature). At exactly
	// MaxSize the last 4096 bytes lie outside the file system.
	MaxSize = 16 << 40
	// MaxLabelLen is the size of s_volume_name.
	MaxLabelLen = 16
	// DefaultInodeRatio is mke2fs's default bytes-per-inode for the
	// "default" usage type.
	DefaultInodeRatio = 16384
	// MinInodeRatio gives one inode per block, the most one inode bitmap
	// block per 32768-block group can track.
	MinInodeRatio = blockSize
	// MaxInodeRatio is mke2fs's upper bound (-i 67108864).
	MaxInodeRatio = 64 << 20
)

// Options configures Format. The zero value is a valid configuration.
type Options struct {
	// Label is the volume label (s_volume_name), at most MaxLabelLen
	// bytes; empty means none.
	Label string
	// UUID is the file system UUID; the zero UUID means a random (version
	// 4) one.
	UUID [16]byte
	// InodeRatio is the number of bytes of the image per inode; zero means
	// DefaultInodeRatio. Inode tables are holes, so a lower ratio costs no
	// host space, only guest-visible capacity (256 bytes per inode).
	InodeRatio int64
}

// validate checks size and o and fills in defaults.
func (o *Options) validate(size int64) error {
	var errs []error
	if size < MinSize || size > MaxSize {
		errs = append(errs, fmt.Errorf("%w: %d bytes: want %d to %d", ErrInvalidSize, size, int64(MinSize), int64(MaxSize)))
	}
	if len(o.Label) > MaxLabelLen {
		errs = append(errs, fmt.Errorf("%w: %q is %d bytes: at most %d", ErrInvalidLabel, o.Label, len(o.Label), MaxLabelLen))
	} else if strings.IndexByte(o.Label, 0) >= 0 {
		errs = append(errs, fmt.Errorf("%w: %q contains a NUL byte", ErrInvalidLabel, o.Label))
	}
	if o.InodeRatio == 0 {
		o.InodeRatio = DefaultInodeRatio
	}
	if o.InodeRatio < MinInodeRatio || o.InodeRatio > MaxInodeRatio {
		errs = append(errs, fmt.Errorf("%w: inode ratio %d: want %d to %d", ErrInvalidSize, o.InodeRatio, MinInodeRatio, MaxInodeRatio))
	}
	return errors.Join(errs...)
}

// FormatFile creates (or truncates) the regular file at path with mode
// 0600, formats it as an empty ext4 file system of size bytes (see
// Format), syncs and closes it. On error the file is removed.
func FormatFile(path string, size int64, opts Options) (err error) {
	if err := opts.validate(size); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("ext4fmt: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("ext4fmt: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := Format(f, size, opts); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("ext4fmt: sync %s: %w", path, err)
	}
	return nil
}

// Format writes an empty ext4 file system of size bytes to the regular
// file f, replacing its contents: f is truncated to zero and then to size,
// so every block Format does not write is a hole. Only metadata that must
// be non-zero is written (see the package documentation); f's offset is
// not used. Format does not sync f.
func Format(f *os.File, size int64, opts Options) error {
	if err := opts.validate(size); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("ext4fmt: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is %v", ErrNotRegular, f.Name(), fi.Mode().Type())
	}
	l, err := newLayout(size, opts.InodeRatio)
	if err != nil {
		return err
	}
	p := &fsParams{layout: l, uuid: opts.UUID, label: opts.Label, now: time.Now()}
	if p.uuid == ([16]byte{}) {
		p.uuid = randomUUID()
	}
	p.hashSeed = randomUUID()

	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("ext4fmt: truncate %s: %w", f.Name(), err)
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("ext4fmt: truncate %s to %d bytes: %w", f.Name(), size, err)
	}
	return p.write(f)
}

// write writes the non-zero blocks of the file system: for each group one
// run from its first block through its last initialised bitmap
// (superblock and descriptor copy where sparse_super keeps one, then the
// bitmaps descFlags leaves initialised), plus, in group 0, the first inode
// table block and the directory blocks.
func (p *fsParams) write(f *os.File) error {
	gdt := make([]byte, p.gdtBlocks*blockSize)
	for g := range p.groups {
		p.putDesc(gdt[g*descSize:], g)
	}
	buf := make([]byte, (1+p.gdtBlocks+2)*blockSize)
	for g := range p.groups {
		run := buf[:(p.superBlocks(g)+2)*blockSize]
		clear(run)
		if hasSuper(g) {
			sb := run[:blockSize]
			if g == 0 {
				sb = sb[superOffset:]
			}
			p.putSuper(sb[:superSize], g)
			copy(run[blockSize:], gdt)
		}
		// The run ends after the last bitmap written; an uninitialised
		// bitmap before it is written as zeros, which nothing reads.
		n := p.superBlocks(g)
		bitmaps := run[n*blockSize:]
		flags := p.descFlags(g)
		if flags&bgBlockUninit == 0 {
			putBitmap(bitmaps[:blockSize], p.usedBlocks(g), p.groupBlocks(g))
			n = p.superBlocks(g) + 1
		}
		if flags&bgInodeUninit == 0 {
			putBitmap(bitmaps[blockSize:], p.usedInodes(g), p.inodesPerGroup)
			n = p.superBlocks(g) + 2
		}
		run = run[:n*blockSize]
		if len(run) == 0 {
			continue
		}
		if err := p.writeAt(f, run, p.groupStart(g)); err != nil {
			return err
		}
	}

	// Inodes 1-16 live in the first inode table block of group 0; of them
	// only the root and lost+found are non-zero. Reserved inodes 1 and 3-10
	// stay zero, as do all free inodes.
	itable := make([]byte, blockSize)
	putDirInode(itable[(rootIno-1)*inodeSize:], 0o755, 3, p.rootBlock(), 1, p.now)
	putDirInode(itable[(lostFoundIno-1)*inodeSize:], 0o700, 2, p.lostFoundBlock(), lostFoundBlocks, p.now)
	if err := p.writeAt(f, itable, p.inodeTable(0)); err != nil {
		return err
	}

	dirs := make([]byte, dataBlocks*blockSize)
	b := putDirent(dirs, rootIno, ".", ftDir, 0)
	b = putDirent(b, rootIno, "..", ftDir, 0)
	putDirent(b, lostFoundIno, "lost+found", ftDir, uint16(len(b)-(len(dirs)-blockSize)))
	lf := dirs[blockSize:]
	b = putDirent(lf, lostFoundIno, ".", ftDir, 0)
	putDirent(b, rootIno, "..", ftDir, uint16(blockSize-12))
	for i := 1; i < lostFoundBlocks; i++ {
		// An empty block is one unused entry spanning it.
		putDirent(lf[i*blockSize:], 0, "", 0, blockSize)
	}
	return p.writeAt(f, dirs, p.rootBlock())
}

func (p *fsParams) writeAt(f *os.File, b []byte, block uint64) error {
	if _, err := f.WriteAt(b, int64(block)*blockSize); err != nil {
		return fmt.Errorf("ext4fmt: write block %d of %s: %w", block, f.Name(), err)
	}
	return nil
}

// randomUUID returns a version 4, variant 1 UUID (RFC 9562 section 5.4).
func randomUUID() [16]byte {
	var u [16]byte
	rand.Read(u[:]) // never returns an error (crypto/rand, Go 1.24+)
	u[6] = u[6]&0x0F | 0x40
	u[8] = u[8]&0x3F | 0x80
	return u
}
