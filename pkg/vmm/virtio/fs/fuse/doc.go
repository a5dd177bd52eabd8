// SPDX-License-Identifier: Apache-2.0

// Package fuse provides a FUSE file server confined to one host directory,
// for the virtio-fs device: [Server.Serve] turns one request's bytes into
// one reply's bytes. It knows no transport; package fs moves the bytes
// between virtqueues and the server.
//
// Protocol: FUSE 7.31 as Linux's virtiofs driver speaks it (wire structs
// from include/uapi/linux/fuse.h, written out in wire.go): INIT, DESTROY,
// LOOKUP, FORGET, BATCH_FORGET, GETATTR, SETATTR, READLINK, SYMLINK, MKNOD,
// MKDIR, UNLINK, RMDIR, RENAME, RENAME2, LINK, OPEN, CREATE, READ, WRITE,
// STATFS, RELEASE, FSYNC, OPENDIR, READDIR, READDIRPLUS, RELEASEDIR,
// FSYNCDIR, ACCESS, FALLOCATE, LSEEK and INTERRUPT (ignored). FLUSH,
// extended attributes and other opcodes answer ENOSYS. The guest mounts with
// default_permissions (virtiofs always does), so permission checks happen
// in the guest; the host process's own rights bound what it can do.
//
// Trust boundary: every request byte comes from the guest, which is
// hostile. Lengths (header, fixed structs, names, WRITE payload) are
// checked against the request; READ, READDIR and READLINK replies are
// capped to MaxRead and to the reply space; node ids and file handles are
// looked up in tables (unknown: ENOENT and EBADF) whose sizes are capped
// (Config.MaxNodes, Config.MaxHandles). Host files are reached only
// through fds: each node holds an O_PATH fd opened beneath its parent's
// with openat2 (RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS,
// RESOLVE_NO_MAGICLINKS, O_NOFOLLOW), names from the guest must be one
// component ("", ".", "..", '/' and names over 255 bytes are refused), and
// attributes, ownership and times are read and set on the fd itself
// (AT_EMPTY_PATH). Symlinks are created as given and never followed by the
// host. Regular files are opened by reopening the node's fd through
// /proc/self/fd, which names that same inode (checked after the open);
// nothing but regular files and directories is ever opened, and device
// nodes other than overlayfs whiteouts (0:0) cannot be created. A
// read-only share refuses every mutating request with EROFS. Malformed
// requests get an error reply, never a panic.
//
// Set-user-ID bits (and set-group-ID on files) the guest asks for are
// dropped unless Config.AllowSetuid, so the guest cannot leave a setuid
// executable for a host user. Not confined: a mount point inside the share
// is followed into (the share is what the host chose to share), and the
// number of files and directories the guest creates is bounded only by the
// host file system (Config.QuotaBytes counts bytes of regular files).
//
// Transports: Serve takes contiguous buffers; ServeScattered takes a
// copied head and the rest of the request and the reply space as buffers
// in guest memory, so READ and WRITE payloads move with preadv and pwritev
// without copies.
//
// Goroutines: none. Serve runs on the caller's goroutine; requests are
// served one at a time under the server's mutex.
//
// Testing: go test ./pkg/vmm/virtio/fs/fuse/ drives the server with
// hand-built requests as a hostile client, against a share with a sentinel
// outside it. Where the tests run as root with /dev/fuse, kernel_test.go
// also mounts the server through /dev/fuse so the host kernel's FUSE
// client (the code virtiofs uses in a guest) drives it with ordinary file
// calls. FuzzServe in fuzz_test.go feeds arbitrary request sequences:
// go test -run='^$' -fuzz=FuzzServe ./pkg/vmm/virtio/fs/fuse/. The
// benchmarks compare LOOKUP+GETATTR and sequential READ/WRITE through the
// server with the same work done by direct syscalls.
package fuse
