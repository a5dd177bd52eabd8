// SPDX-License-Identifier: Apache-2.0

// Package erofs writes uncompressed EROFS filesystem images from an in-memory
// tree of inodes.
//
// The on-disk format is the one Linux reads in fs/erofs (include file
// fs/erofs/erofs_fs.h, documented at
// https://docs.kernel.org/filesystems/erofs.html and in erofs-utils). This
// package writes the subset every kernel since 5.4 mounts, checked against
// Linux 6.12:
//
//   - 4096-byte blocks, no compression, no chunk indexes, no extra devices;
//     the superblock at byte 1024 of block 0 (see [SuperBlock]);
//   - metadata starting at block 0 (meta_blkaddr 0) so the root inode follows
//     the superblock at byte 1152 (nid 36) and every nid is a 32-byte slot
//     number counted from the start of the image;
//   - compact 32-byte inodes when uid, gid, nlink and size fit their 16/32-bit
//     fields and the mtime equals the superblock build time (compact inodes
//     have no mtime; the build time is chosen as the most common mtime of the
//     tree), extended 64-byte inodes otherwise (see [InodeCompact],
//     [InodeExtended]);
//   - the flat-plain data layout (whole blocks at i_u.raw_blkaddr) and the
//     flat-inline layout (whole blocks, then the tail packed right after the
//     inode and its xattrs in the metadata area, never crossing a block);
//   - directories as sorted erofs_dirent arrays followed by their names, one
//     block at a time (see [Dirent]);
//   - extended attributes in the inode body (erofs_xattr_ibody_header and
//     erofs_xattr_entry) with the short name-prefix indexes user., trusted.,
//     security. and system.posix_acl_{access,default}; no shared xattr area.
//
// The image is written strictly sequentially (superblock block, then all
// metadata, then all data blocks), so [Write] needs only an io.Writer and
// keeps no file data in memory: it reads regular-file contents from each
// inode's io.ReaderAt while it writes.
//
// Trust boundary: the tree comes from the caller (pkg/rootfs, which built it
// from registry layers); [Write] still validates every name, size and xattr
// against the format's limits and returns an error wrapping [ErrInvalidTree]
// rather than writing an image the kernel would refuse. The image itself is
// read by the guest kernel, which trusts nothing in it either.
//
// Goroutines: none.
//
// Testing: go test ./pkg/rootfs/erofs/ checks the disk types against the
// byte offsets of erofs_fs.h; pkg/rootfs tests read whole images back with
// github.com/erofs/go-erofs, fsck.erofs and dump.erofs (erofs-utils), and a
// loop mount where the host allows it.
package erofs
