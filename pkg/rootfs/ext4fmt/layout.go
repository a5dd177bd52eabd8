// SPDX-License-Identifier: Apache-2.0

package ext4fmt

import "fmt"

// On-disk constants. Names follow fs/ext4/ext4.h (Linux 6.12); the
// geometry mirrors what mke2fs chooses for a 4096-byte block size.
const (
	blockSize      = 4096          // EXT4_BLOCK_SIZE with s_log_block_size 2
	logBlockSize   = 2             // s_log_block_size: blockSize = 1024 << 2
	blocksPerGroup = 8 * blockSize // one block bitmap block per group
	inodeSize      = 256           // s_inode_size, mke2fs's default
	inodesPerBlock = blockSize / inodeSize
	descSize       = 32 // EXT2_MIN_DESC_SIZE: no 64bit feature
	extraIsize     = 32 // i_extra_isize: the ext4 fields up to i_projid

	rootIno      = 2  // EXT4_ROOT_INO
	firstIno     = 11 // EXT4_GOOD_OLD_FIRST_INO: inodes 1-10 are reserved
	lostFoundIno = firstIno

	// lostFoundBlocks preallocates 16 KiB for lost+found, as mke2fs does,
	// so e2fsck can reconnect orphans without allocating.
	lostFoundBlocks = 4
	// dataBlocks is what group 0 holds beyond its metadata: the root
	// directory block and lost+found.
	dataBlocks = 1 + lostFoundBlocks
	// minLastGroup is mke2fs's rule (ext2fs_initialize): a last group with
	// fewer than its overhead plus 50 blocks is dropped from the file system.
	minLastGroup = 50

	maxBlocks = 1<<32 - 1 // s_blocks_count_lo without the 64bit feature
	maxInodes = 1<<32 - 1 // s_inodes_count
)

// layout is the geometry of one file system: every block number Format
// writes is derived from it.
type layout struct {
	blocks         uint32 // s_blocks_count; s_first_data_block is 0
	groups         uint32
	inodesPerGroup uint32
	itableBlocks   uint32 // inode table blocks per group
	gdtBlocks      uint32 // group descriptor table blocks per copy
}

// newLayout computes the geometry for a device of size bytes with one inode
// per ratio bytes. Callers have validated size and ratio.
func newLayout(size, ratio int64) (layout, error) {
	n := uint64(size) / blockSize
	if n > maxBlocks {
		n = maxBlocks // exactly 16 TiB: the last block stays outside
	}
	for {
		l := layout{blocks: uint32(n)}
		l.groups = uint32((n + blocksPerGroup - 1) / blocksPerGroup)
		if l.groups == 0 {
			return layout{}, fmt.Errorf("%w: %d bytes leave no block group", ErrInvalidSize, size)
		}
		inodes := n * blockSize / uint64(ratio)
		ipg := (inodes + uint64(l.groups) - 1) / uint64(l.groups)
		ipg = (ipg + inodesPerBlock - 1) / inodesPerBlock * inodesPerBlock
		ipg = max(ipg, inodesPerBlock)
		ipg = min(ipg, blocksPerGroup) // one inode bitmap block per group
		if ipg*uint64(l.groups) > maxInodes {
			ipg = maxInodes / uint64(l.groups) / inodesPerBlock * inodesPerBlock
		}
		l.inodesPerGroup = uint32(ipg)
		l.itableBlocks = l.inodesPerGroup / inodesPerBlock
		l.gdtBlocks = (l.groups*descSize + blockSize - 1) / blockSize

		last := l.groups - 1
		if l.groupBlocks(last) < l.overhead(last)+minLastGroup && l.groups > 1 {
			n = uint64(last) * blocksPerGroup
			continue
		}
		if l.overhead(0)+dataBlocks > l.groupBlocks(0) {
			return layout{}, fmt.Errorf("%w: %d bytes cannot hold the metadata of group 0 (%d blocks)",
				ErrInvalidSize, size, l.overhead(0)+dataBlocks)
		}
		return l, nil
	}
}

// inodes returns s_inodes_count.
func (l layout) inodes() uint32 { return l.groups * l.inodesPerGroup }

// groupStart returns the first block of group g.
func (l layout) groupStart(g uint32) uint64 { return uint64(g) * blocksPerGroup }

// groupBlocks returns the number of blocks in group g; only the last group
// may be short.
func (l layout) groupBlocks(g uint32) uint32 {
	if g == l.groups-1 {
		return l.blocks - g*blocksPerGroup
	}
	return blocksPerGroup
}

// hasSuper reports whether group g holds a superblock and descriptor table
// copy under sparse_super: groups 0 and 1 and the powers of 3, 5 and 7
// (ext4_bg_has_super in fs/ext4/balloc.c).
func hasSuper(g uint32) bool {
	if g <= 1 {
		return true
	}
	if g&1 == 0 {
		return false
	}
	for _, b := range []uint32{3, 5, 7} {
		p := uint64(b)
		for p < uint64(g) {
			p *= uint64(b)
		}
		if p == uint64(g) {
			return true
		}
	}
	return false
}

// superBlocks returns the blocks at the start of group g taken by the
// superblock and group descriptor copy: 0 when g has no copy.
func (l layout) superBlocks(g uint32) uint32 {
	if !hasSuper(g) {
		return 0
	}
	return 1 + l.gdtBlocks
}

// overhead returns the metadata blocks of group g: superblock and
// descriptor copy, block bitmap, inode bitmap and inode table, in that
// order from the group's first block (no flex_bg).
func (l layout) overhead(g uint32) uint32 { return l.superBlocks(g) + 2 + l.itableBlocks }

// usedBlocks returns the blocks in use in group g after formatting; they
// are always the first blocks of the group.
func (l layout) usedBlocks(g uint32) uint32 {
	if g == 0 {
		return l.overhead(0) + dataBlocks
	}
	return l.overhead(g)
}

// usedInodes returns the inodes in use in group g after formatting: the
// reserved inodes and lost+found, all in group 0.
func (l layout) usedInodes(g uint32) uint32 {
	if g == 0 {
		return firstIno
	}
	return 0
}

func (l layout) blockBitmap(g uint32) uint64 { return l.groupStart(g) + uint64(l.superBlocks(g)) }
func (l layout) inodeBitmap(g uint32) uint64 { return l.blockBitmap(g) + 1 }
func (l layout) inodeTable(g uint32) uint64  { return l.blockBitmap(g) + 2 }

// rootBlock is the root directory's only block; lost+found follows it.
func (l layout) rootBlock() uint64      { return l.inodeTable(0) + uint64(l.itableBlocks) }
func (l layout) lostFoundBlock() uint64 { return l.rootBlock() + 1 }

// freeBlocks returns s_free_blocks_count.
func (l layout) freeBlocks() uint64 {
	var n uint64
	for g := range l.groups {
		n += uint64(l.groupBlocks(g) - l.usedBlocks(g))
	}
	return n
}
