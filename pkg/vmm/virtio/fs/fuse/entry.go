// SPDX-License-Identifier: Apache-2.0

package fuse

import (
	"golang.org/x/sys/unix"
)

// permBits returns the permission bits of a mode the guest asks for. The
// set-user-ID bit, and set-group-ID on anything but a directory, are
// dropped unless Config.AllowSetuid: a guest must not leave a setuid
// executable on the host for a host user to run. (Set-group-ID on a
// directory only makes new entries inherit its group.)
func (s *Server) permBits(mode uint32, dir bool) uint32 {
	m := mode & 0o7777
	if !s.cfg.AllowSetuid {
		m &^= unix.S_ISUID
		if !dir {
			m &^= unix.S_ISGID
		}
	}
	return m
}

// name reads the next NUL-terminated name from r's body and checks it is a
// single component (validName).
func (s *Server) name(r *request) (string, unix.Errno) {
	b := r.in.cstring()
	if !r.in.ok {
		s.m.BadRequests.Add(1)
		return "", unix.EINVAL
	}
	if !validName(b) {
		s.m.BadNames.Add(1)
		if len(b) > maxNameLen {
			return "", unix.ENAMETOOLONG
		}
		return "", unix.EINVAL
	}
	return string(b), 0
}

// dirNode returns r's node if it is a directory.
func dirNode(r *request) (*node, unix.Errno) {
	if !r.node.isDir() {
		return nil, unix.ENOTDIR
	}
	return r.node, 0
}

// lookupChild opens name beneath the directory dirFD as a new O_PATH fd and
// returns its node with one more reference, filling st.
func (s *Server) lookupChild(dirFD int, name string, st *unix.Stat_t) (*node, unix.Errno) {
	fd, err := openBeneath(dirFD, name, unix.O_PATH, 0)
	if err != nil {
		return nil, errno(err)
	}
	if err := fstat(fd, st); err != nil {
		unix.Close(fd)
		return nil, errno(err)
	}
	return s.nodes.add(fd, st)
}

// entryReply looks up name in dir and writes a fuse_entry_out for it.
func (s *Server) entryReply(r *request, dir *node, name string) (int, unix.Errno) {
	var st unix.Stat_t
	n, e := s.lookupChild(dir.fd, name, &st)
	if e != 0 {
		return 0, e
	}
	a := toAttr(&st)
	putEntryOut(r.out, n.id, s.valid, &a)
	return entryOutSize, 0
}

func (s *Server) lookup(r *request) (int, unix.Errno) {
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	name, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	return s.entryReply(r, dir, name)
}

func (s *Server) forget(r *request) (int, unix.Errno) {
	s.nodes.forget(r.hdr.nodeID, le.Uint64(r.in.fixed(forgetInSize)))
	return 0, 0
}

// batchForget drops up to count entries, as many as the body holds.
func (s *Server) batchForget(r *request) (int, unix.Errno) {
	count := le.Uint32(r.in.fixed(batchForgetSize))
	for range count {
		one := r.in.fixed(forgetOneSize)
		if one == nil {
			s.m.BadRequests.Add(1)
			break
		}
		s.nodes.forget(le.Uint64(one[0:]), le.Uint64(one[8:]))
	}
	return 0, 0
}

func (s *Server) getattr(r *request) (int, unix.Errno) {
	var st unix.Stat_t
	if err := fstat(r.node.fd, &st); err != nil {
		return 0, errno(err)
	}
	a := toAttr(&st)
	putAttrOut(r.out, s.valid, &a)
	return attrOutSize, 0
}

// setattr applies the fields valid names, in the order chmod, chown,
// truncate, utimes, and answers the resulting attributes.
func (s *Server) setattr(r *request) (int, unix.Errno) {
	in := r.in.fixed(setattrInSize)
	valid := le.Uint32(in[0:])
	fh := le.Uint64(in[8:])
	size := le.Uint64(in[16:])
	atime, mtime := le.Uint64(in[32:]), le.Uint64(in[40:])
	atimens, mtimens := le.Uint32(in[56:]), le.Uint32(in[60:])
	mode := le.Uint32(in[68:])
	uid, gid := le.Uint32(in[76:]), le.Uint32(in[80:])
	n := r.node

	if valid&fattrMode != 0 {
		if n.isSymlink() {
			return 0, unix.EOPNOTSUPP
		}
		if err := unix.Fchmodat(n.fd, "", s.permBits(mode, n.isDir()), unix.AT_EMPTY_PATH); err != nil {
			return 0, errno(err)
		}
	}
	if valid&(fattrUID|fattrGID) != 0 {
		u, g := -1, -1
		if valid&fattrUID != 0 {
			u = int(uid)
		}
		if valid&fattrGID != 0 {
			g = int(gid)
		}
		if err := unix.Fchownat(n.fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return 0, errno(err)
		}
	}
	if valid&fattrSize != 0 {
		if e := s.truncate(n, valid&fattrFh != 0, fh, size); e != 0 {
			return 0, e
		}
	}
	if valid&(fattrAtime|fattrMtime|fattrAtimeNow|fattrMtimeNow) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		switch {
		case valid&fattrAtimeNow != 0:
			ts[0].Nsec = unix.UTIME_NOW
		case valid&fattrAtime != 0:
			if atimens >= 1e9 {
				return 0, unix.EINVAL
			}
			ts[0] = unix.Timespec{Sec: int64(atime), Nsec: int64(atimens)}
		}
		switch {
		case valid&fattrMtimeNow != 0:
			ts[1].Nsec = unix.UTIME_NOW
		case valid&fattrMtime != 0:
			if mtimens >= 1e9 {
				return 0, unix.EINVAL
			}
			ts[1] = unix.Timespec{Sec: int64(mtime), Nsec: int64(mtimens)}
		}
		if err := unix.UtimesNanoAt(n.fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return 0, errno(err)
		}
	}
	return s.getattr(r)
}

// truncate sets node n's size, through the open handle fh when the guest
// names one, else by reopening the file for writing.
func (s *Server) truncate(n *node, useFh bool, fh, size uint64) unix.Errno {
	if size > 1<<62 {
		return unix.EFBIG
	}
	if !n.isReg() {
		if n.isDir() {
			return unix.EISDIR
		}
		return unix.EINVAL
	}
	fd := -1
	if useFh {
		h, e := s.handles.file(fh)
		if e != 0 {
			return e
		}
		if h.key == n.key {
			fd = h.fd
		}
	}
	if fd < 0 {
		var err error
		if fd, err = s.reopen(n, unix.O_WRONLY); err != nil {
			return errno(err)
		}
		defer unix.Close(fd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errno(err)
	}
	if e := s.charge(uint64(st.Size), size); e != 0 {
		return e
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		s.uncharge(uint64(st.Size), size)
		return errno(err)
	}
	return 0
}

func (s *Server) readlink(r *request) (int, unix.Errno) {
	if !r.node.isSymlink() {
		return 0, unix.EINVAL
	}
	buf := make([]byte, maxSymlinkLen+1)
	n, err := unix.Readlinkat(r.node.fd, "", buf)
	if err != nil {
		return 0, errno(err)
	}
	if n > len(r.out) {
		return 0, unix.ERANGE
	}
	return copy(r.out, buf[:n]), 0
}

// chown gives a newly created inode the requester's ownership when
// Config.GuestOwnership asks for it and the host can.
func (s *Server) chown(r *request, dirFD int, name string) unix.Errno {
	if !s.cfg.GuestOwnership || !s.asRoot {
		return 0
	}
	err := unix.Fchownat(dirFD, name, int(r.hdr.uid), int(r.hdr.gid), unix.AT_SYMLINK_NOFOLLOW)
	return errno(err)
}

// created finishes a creating request: it chowns the new entry, looks it
// up, gives it exactly the permission bits perm when setPerm (the host
// process's umask must not narrow what the guest, which applied its own,
// asked for; mkdir also drops set-group-ID) and answers its entry. If the
// chown or lookup fails the entry is removed again, so a failed request
// leaves nothing behind.
func (s *Server) created(r *request, dir *node, name string, isDir bool, perm uint32, setPerm bool) (int, unix.Errno) {
	undo := func() {
		flags := 0
		if isDir {
			flags = unix.AT_REMOVEDIR
		}
		unix.Unlinkat(dir.fd, name, flags)
	}
	if e := s.chown(r, dir.fd, name); e != 0 {
		undo()
		return 0, e
	}
	var st unix.Stat_t
	n, e := s.lookupChild(dir.fd, name, &st)
	if e != 0 {
		undo()
		return 0, e
	}
	if setPerm && st.Mode&0o7777 != perm {
		if unix.Fchmodat(n.fd, "", perm, unix.AT_EMPTY_PATH) == nil {
			fstat(n.fd, &st)
		}
	}
	a := toAttr(&st)
	putEntryOut(r.out, n.id, s.valid, &a)
	return entryOutSize, 0
}

func (s *Server) symlink(r *request) (int, unix.Errno) {
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	name, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	// The target is stored as given: the host never follows it.
	target := r.in.cstring()
	if !r.in.ok || len(target) == 0 || len(target) > maxSymlinkLen {
		s.m.BadRequests.Add(1)
		return 0, unix.EINVAL
	}
	if err := unix.Symlinkat(string(target), dir.fd, name); err != nil {
		return 0, errno(err)
	}
	return s.created(r, dir, name, false, 0, false)
}

// mknod creates regular files, FIFOs, sockets and overlayfs whiteouts
// (character device 0:0). Other device nodes are refused: a node for a
// host device in the share would let anything on the host that opens it
// reach the device.
func (s *Server) mknod(r *request) (int, unix.Errno) {
	in := r.in.fixed(mknodInSize)
	mode, rdev := le.Uint32(in[0:]), le.Uint32(in[4:])
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	name, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFIFO, unix.S_IFSOCK:
		rdev = 0
	case unix.S_IFCHR:
		if rdev != 0 {
			return 0, unix.EPERM
		}
	default:
		return 0, unix.EPERM
	}
	perm := s.permBits(mode, false)
	if err := unix.Mknodat(dir.fd, name, mode&unix.S_IFMT|perm, int(rdev)); err != nil {
		return 0, errno(err)
	}
	return s.created(r, dir, name, false, perm, true)
}

func (s *Server) mkdir(r *request) (int, unix.Errno) {
	mode := le.Uint32(r.in.fixed(mkdirInSize))
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	name, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	perm := s.permBits(mode, true)
	if err := unix.Mkdirat(dir.fd, name, perm); err != nil {
		return 0, errno(err)
	}
	return s.created(r, dir, name, true, perm, true)
}

func (s *Server) unlink(r *request) (int, unix.Errno) { return s.remove(r, 0) }
func (s *Server) rmdir(r *request) (int, unix.Errno)  { return s.remove(r, unix.AT_REMOVEDIR) }

func (s *Server) remove(r *request, flags int) (int, unix.Errno) {
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	name, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	// The quota counts file sizes: removing the last name of a file
	// frees its size (an open handle may keep the blocks a while).
	var st unix.Stat_t
	statErr := unix.Fstatat(dir.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err := unix.Unlinkat(dir.fd, name, flags); err != nil {
		return 0, errno(err)
	}
	if statErr == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 {
		s.uncharge(0, uint64(st.Size))
	}
	return 0, 0
}

// rename serves RENAME and RENAME2. Both directories are nodes beneath the
// root and both names single components, so nothing moves across the
// share's boundary.
func (s *Server) rename(r *request) (int, unix.Errno) {
	newDir := le.Uint64(r.in.b[0:])
	var flags uint32
	if r.hdr.opcode == opRename2 {
		in := r.in.fixed(rename2InSize)
		flags = le.Uint32(in[8:])
	} else {
		r.in.fixed(renameInSize)
	}
	if flags&^(renameNoReplace|renameExchange) != 0 {
		// RENAME_WHITEOUT would create a device node; refused like MKNOD.
		return 0, unix.EINVAL
	}
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	oldName, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	newName, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	nd := s.nodes.get(newDir)
	if nd == nil {
		s.m.BadRequests.Add(1)
		return 0, unix.ENOENT
	}
	if !nd.isDir() {
		return 0, unix.ENOTDIR
	}
	// A file the rename replaces leaves the quota.
	var st unix.Stat_t
	statErr := unix.Fstatat(nd.fd, newName, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err := unix.Renameat2(dir.fd, oldName, nd.fd, newName, uint(flags)); err != nil {
		return 0, errno(err)
	}
	if flags&renameExchange == 0 && statErr == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 {
		s.uncharge(0, uint64(st.Size))
	}
	return 0, 0
}

// link gives node oldnodeid a new name. The node is one the guest looked
// up in this server's table, so it lies beneath this share's root; ids are
// per server, so a node of another share cannot be named.
func (s *Server) link(r *request) (int, unix.Errno) {
	old := s.nodes.get(le.Uint64(r.in.fixed(linkInSize)))
	if old == nil {
		s.m.BadRequests.Add(1)
		return 0, unix.ENOENT
	}
	if old.isDir() {
		return 0, unix.EPERM
	}
	dir, e := dirNode(r)
	if e != 0 {
		return 0, e
	}
	name, e := s.name(r)
	if e != 0 {
		return 0, e
	}
	// AT_EMPTY_PATH links the fd's own inode; it needs
	// CAP_DAC_READ_SEARCH. Without it, go through /proc/self/fd, which
	// also names exactly that inode (only for regular files: a symlink's
	// magic link must not be followed).
	err := unix.Linkat(old.fd, "", dir.fd, name, unix.AT_EMPTY_PATH)
	if err == unix.ENOENT && !s.asRoot && old.isReg() {
		err = unix.Linkat(s.procFD, itoa(old.fd), dir.fd, name, unix.AT_SYMLINK_FOLLOW)
	}
	if err != nil {
		return 0, errno(err)
	}
	n, e := s.entryReply(r, dir, name)
	if e != 0 {
		unix.Unlinkat(dir.fd, name, 0)
	}
	return n, e
}

// access answers ACCESS. The virtiofs guest mounts with default_permissions
// and checks modes itself; the host only refuses writes to a read-only
// share.
func (s *Server) access(r *request) (int, unix.Errno) {
	mask := le.Uint32(r.in.fixed(accessInSize))
	if s.cfg.ReadOnly && mask&unix.W_OK != 0 {
		s.m.ReadOnlyRejects.Add(1)
		return 0, unix.EROFS
	}
	return 0, 0
}

func (s *Server) statfs(r *request) (int, unix.Errno) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(s.nodes.root.fd, &st); err != nil {
		return 0, errno(err)
	}
	out := r.out[:statfsOutSize]
	clear(out)
	le.PutUint64(out[0:], st.Blocks)
	le.PutUint64(out[8:], st.Bfree)
	le.PutUint64(out[16:], st.Bavail)
	le.PutUint64(out[24:], st.Files)
	le.PutUint64(out[32:], st.Ffree)
	le.PutUint32(out[40:], uint32(st.Bsize))
	le.PutUint32(out[44:], uint32(st.Namelen))
	le.PutUint32(out[48:], uint32(st.Frsize))
	if q := s.cfg.QuotaBytes; q > 0 && st.Bsize > 0 {
		// Report the quota as the file system's size, so df in the
		// guest shows what it may still write.
		bs := uint64(st.Bsize)
		free := uint64(0)
		if s.quotaUsed < q {
			free = (q - s.quotaUsed) / bs
		}
		le.PutUint64(out[0:], q/bs)
		le.PutUint64(out[8:], min(free, st.Bfree))
		le.PutUint64(out[16:], min(free, st.Bavail))
	}
	return statfsOutSize, 0
}
