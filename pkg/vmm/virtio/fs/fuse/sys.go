// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// resolveBeneath is how every guest-named path is resolved: one component
// (validName), never above the directory fd, never through a symlink or a
// /proc magic link. It is defence in depth: validName already refuses "..",
// and O_NOFOLLOW keeps a trailing symlink from being followed.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS

// openBeneath opens name in the directory dirFD with openat2, confined as
// resolveBeneath says. flags always gain O_NOFOLLOW and O_CLOEXEC.
func openBeneath(dirFD int, name string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_LARGEFILE),
		Mode:    uint64(mode),
		Resolve: resolveBeneath,
	}
	for {
		fd, err := unix.Openat2(dirFD, name, &how)
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
		// EAGAIN: openat2 raced a rename with RESOLVE_BENEATH; retry.
	}
}

// fstat stats the inode fd refers to (an O_PATH fd included) without
// following it if it is a symlink.
func fstat(fd int, st *unix.Stat_t) error {
	return unix.Fstatat(fd, "", st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

// reopen opens the inode behind node n's O_PATH fd with real access
// flags, through /proc/self/fd. This is the one place a magic link is
// followed: it leads to n's own inode, which was reached beneath the root,
// and only regular files and directories are reopened, so no symlink or
// device is followed or opened. The result is checked to be the same inode.
func (s *Server) reopen(n *node, flags int) (int, error) {
	if !n.isReg() && !n.isDir() {
		return -1, unix.EINVAL
	}
	fd, err := unix.Openat(s.procFD, strconv.Itoa(n.fd), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || keyOf(&st) != n.key {
		unix.Close(fd)
		return -1, unix.EIO
	}
	return fd, nil
}

// toAttr converts a host stat into the attributes the guest sees.
func toAttr(st *unix.Stat_t) attr {
	return attr{
		ino:     st.Ino,
		size:    uint64(st.Size),
		blocks:  uint64(st.Blocks),
		atime:   uint64(st.Atim.Sec),
		mtime:   uint64(st.Mtim.Sec),
		ctime:   uint64(st.Ctim.Sec),
		atimens: uint32(st.Atim.Nsec),
		mtimens: uint32(st.Mtim.Nsec),
		ctimens: uint32(st.Ctim.Nsec),
		mode:    st.Mode,
		nlink:   uint32(st.Nlink),
		uid:     st.Uid,
		gid:     st.Gid,
		rdev:    encodeDev(st.Rdev),
		blksize: uint32(st.Blksize),
	}
}

// encodeDev packs a host dev_t into the kernel's 32-bit new_encode_dev
// form, which the guest decodes from fuse_attr.rdev.
func encodeDev(dev uint64) uint32 {
	major, minor := unix.Major(dev), unix.Minor(dev)
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// usage sums the sizes of the regular files beneath dirFD, for the quota.
// It walks with openat2 like every other access and never follows symlinks.
func usage(dirFD int) (uint64, error) {
	fd, err := openBeneath(dirFD, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var total uint64
	buf := make([]byte, dirBufSize)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return 0, err
		}
		if n <= 0 {
			return total, nil
		}
		for p := buf[:n]; len(p) > 0; {
			d, rest, ok := nextDirent64(p)
			if !ok {
				return 0, unix.EIO
			}
			p = rest
			if isDotOrDotDot(d.name) {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(fd, string(d.name), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // gone meanwhile
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				total += uint64(st.Size)
			case unix.S_IFDIR:
				sub, err := openBeneath(fd, string(d.name), unix.O_PATH|unix.O_DIRECTORY, 0)
				if err != nil {
					continue
				}
				n, err := usage(sub)
				unix.Close(sub)
				if err != nil {
					return 0, err
				}
				total += n
			}
		}
	}
}
