// SPDX-License-Identifier: Apache-2.0

// Package ext4fmt formats a sparse file as an empty ext4 file system, in
// pure Go, for a sandbox's writable root disk: the guest kernel mounts it
// read-write with mount -t ext4 as its overlay upper layer. It replaces
// mkfs.ext4 (e2fsprogs), which the hosts that run sandboxes need not have.
//
// The format is the on-disk layout of fs/ext4/ext4.h (Linux 6.12; see
// https://docs.kernel.org/filesystems/ext4/), in the simplest form the ext4
// driver mounts read-write and e2fsck accepts as clean:
//
//   - revision 1 (dynamic), 4096-byte blocks, 32768 blocks and one block
//     bitmap per group, first data block 0, 256-byte inodes with 32 bytes
//     of ext4 fields (nanosecond and creation times, room for in-inode
//     xattrs), one inode per 16 KiB by default (Options.InodeRatio);
//   - compat: ext_attr (overlayfs keeps trusted.overlay.* xattrs on the
//     upper layer) and dir_index (hashed directories once a directory
//     outgrows a block; half_md4 with a random seed, signed hash);
//   - incompat: filetype (the type in each directory entry) and extent
//     (the kernel maps new files with extents; Format writes the root and
//     lost+found as one-extent trees);
//   - ro_compat: sparse_super (superblock and descriptor copies only in
//     groups 0, 1 and powers of 3, 5 and 7), large_file, huge_file,
//     dir_nlink, extra_isize, and uninit_bg (gdt_csum: each group
//     descriptor carries a crc16, which lets groups mark their bitmaps
//     uninitialised, as mke2fs does, so they need not be written, and
//     their inode tables zeroed, so the kernel starts no lazy
//     initialisation that would fill the holes).
//
// Left out on purpose, each to keep the writer small and every byte it
// writes checkable by e2fsck:
//
//   - has_journal. The runtime unmounts or syncs the disk at shutdown, so a
//     clean stop loses nothing. If the host (or the VMM) dies while the
//     guest has the disk mounted, writes still in the guest's page cache
//     are lost and the file system may be left inconsistent: the next
//     mount works but a full e2fsck may be needed to trust it, and the
//     sandbox's writable layer should then be treated as damaged. The
//     disk is scratch space, not a database.
//   - metadata_csum: no crc32c checksums of the superblock, bitmaps,
//     inodes, directory blocks or extent blocks; only the group
//     descriptors' crc16 of uninit_bg.
//   - flex_bg, 64bit, resize_inode, meta_bg: metadata stays in its own
//     group, sizes stop at 16 TiB, and online growth beyond the descriptor
//     blocks present needs an offline resize2fs.
//   - reserved blocks (-m 0): the whole disk belongs to the sandbox.
//
// The root directory (inode 2) is owned by 0:0 with mode 0755 and holds
// only lost+found (inode 11, 0:0, mode 0700, four preallocated blocks so
// e2fsck can reconnect orphans without allocating).
//
// Sparseness: Format truncates the file and then writes only blocks that
// must be non-zero: the superblock and descriptor table copies, group 0's
// bitmaps and first inode table block, the last group's block bitmap (its
// padding bits), and the root and lost+found directory blocks. Inode
// tables and all other bitmaps are holes. A 4 GiB image allocates about
// 100 KiB on the host and formats in about a millisecond; the descriptor
// table copies grow with the size (32 bytes per 128 MiB group, in about
// 2 log(groups) copies).
//
// Trust boundary: the inputs are the caller's size and Options, validated
// against the format's limits (MinSize, MaxSize, MaxLabelLen, the inode
// ratio bounds). The package never reads an image back; the guest kernel
// owns the file system once it is mounted.
//
// Goroutines: none.
//
// Testing: go test ./pkg/rootfs/ext4fmt/ checks the geometry against
// mke2fs's, runs e2fsck -fn, dumpe2fs -h and debugfs over images of several
// sizes when e2fsprogs is installed, and, as root with loop devices,
// mounts an image with -t ext4, fills it (2000 files in one directory, a
// 50 MiB file, an overlayfs upper with a whiteout and an opaque directory),
// and checks it with e2fsck again; the same mount test runs against
// mkfs.ext4 for comparison, and BenchmarkFormat reports time and allocated
// bytes of both.
package ext4fmt
