// SPDX-License-Identifier: Apache-2.0

package fuse

import "golang.org/x/sys/unix"

// node is one host inode the guest holds a reference to. Its fd is an
// O_PATH descriptor opened beneath the share root, so it pins the inode
// (and its number) for as long as the node lives, and every access to the
// node goes through it rather than through a path.
type node struct {
	id   uint64
	fd   int
	key  inodeKey
	mode uint32 // S_IFMT bits at lookup; an inode never changes type
	refs uint64 // the guest's lookup count (FUSE nlookup)
}

func (n *node) isDir() bool     { return n.mode == unix.S_IFDIR }
func (n *node) isReg() bool     { return n.mode == unix.S_IFREG }
func (n *node) isSymlink() bool { return n.mode == unix.S_IFLNK }

// inodeKey identifies a host inode, so one inode is one node however many
// names reach it.
type inodeKey struct{ dev, ino uint64 }

func keyOf(st *unix.Stat_t) inodeKey { return inodeKey{dev: st.Dev, ino: st.Ino} }

// nodeTable maps the guest's node ids to nodes. Ids are allocated from a
// counter and never reused, so a stale id from the guest finds nothing.
type nodeTable struct {
	byID  map[uint64]*node
	byKey map[inodeKey]*node
	root  *node
	next  uint64
	max   int
}

func (t *nodeTable) init(rootFD int, st *unix.Stat_t, max int) {
	t.root = &node{id: RootID, fd: rootFD, key: keyOf(st), mode: st.Mode & unix.S_IFMT, refs: 1}
	t.max = max
	t.next = RootID + 1
	t.dropAll()
}

// get returns the node with id, or nil.
func (t *nodeTable) get(id uint64) *node {
	if id == RootID {
		return t.root
	}
	return t.byID[id]
}

// add takes ownership of fd, an O_PATH (or otherwise opened) descriptor of
// the inode st describes, and returns its node with one more reference.
// An inode already known keeps its node and fd is closed. It fails with
// ENFILE when the table is full.
func (t *nodeTable) add(fd int, st *unix.Stat_t) (*node, unix.Errno) {
	k := keyOf(st)
	if n := t.byKey[k]; n != nil {
		unix.Close(fd)
		n.refs++
		return n, 0
	}
	if k == t.root.key {
		// The root reached again (a bind mount of it inside itself):
		// one node for it, which is never forgotten.
		unix.Close(fd)
		return t.root, 0
	}
	if len(t.byID) >= t.max {
		unix.Close(fd)
		return nil, unix.ENFILE
	}
	n := &node{id: t.next, fd: fd, key: k, mode: st.Mode & unix.S_IFMT, refs: 1}
	t.next++
	t.byID[n.id] = n
	t.byKey[k] = n
	return n, 0
}

// forget drops nlookup references from node id and releases it at zero.
// Unknown ids and the root are ignored: FORGET has no reply to fail.
func (t *nodeTable) forget(id, nlookup uint64) {
	n := t.byID[id]
	if n == nil {
		return
	}
	if nlookup < n.refs {
		n.refs -= nlookup
		return
	}
	delete(t.byID, id)
	delete(t.byKey, n.key)
	unix.Close(n.fd)
}

// dropAll releases every node but the root.
func (t *nodeTable) dropAll() {
	for _, n := range t.byID {
		unix.Close(n.fd)
	}
	t.byID = make(map[uint64]*node)
	t.byKey = make(map[inodeKey]*node)
}

func (t *nodeTable) closeRoot() error { return unix.Close(t.root.fd) }

// handle is an open file or directory. It has its own fd, independent of
// the node's, so a guest that forgets a node before releasing its handles
// cannot make either fd dangle.
type handle struct {
	fd      int
	dir     bool
	appends bool     // opened O_APPEND: writes land at the end
	key     inodeKey // the inode opened, for truncate through a handle
	// ents are a directory's entries from the start of the last READDIR
	// reply to the last one read from the fd, which stands after it. A
	// READDIR whose offset is one of theirs continues from there without
	// seeking: seeking is positional on some file systems (tmpfs before
	// Linux 6.6), so after entries were removed it would skip live ones
	// (rm -rf then finds the directory not empty).
	ents []dirEnt
}

// dirEnt is a directory entry kept by a handle.
type dirEnt struct {
	ino, off uint64
	typ      uint8
	name     string
}

// handleTable maps the guest's file handles to open files. Handles are
// allocated from a counter and never reused.
type handleTable struct {
	byID map[uint64]*handle
	next uint64
	max  int
	// retained counts the dirEnts all handles keep, bounded by
	// maxRetainedEnts so that many open directories cannot grow the
	// server without limit.
	retained int
}

// maxRetainedEnts bounds handleTable.retained; a handle that would pass it
// keeps nothing and READDIR seeks instead.
const maxRetainedEnts = 1 << 20

// keep replaces h's entries with ents within the budget.
func (t *handleTable) keep(h *handle, ents []dirEnt) {
	t.retained -= len(h.ents)
	h.ents = nil
	if t.retained+len(ents) <= maxRetainedEnts {
		h.ents = ents
		t.retained += len(ents)
	}
}

func (t *handleTable) init(max int) {
	t.max = max
	t.next = 1
	t.byID = make(map[uint64]*handle)
}

// add takes ownership of fd and returns its handle id, or ENFILE when the
// table is full (fd is then closed).
func (t *handleTable) add(h *handle) (uint64, unix.Errno) {
	if len(t.byID) >= t.max {
		unix.Close(h.fd)
		return 0, unix.ENFILE
	}
	id := t.next
	t.next++
	t.byID[id] = h
	return id, 0
}

// file returns the open file (not directory) with id.
func (t *handleTable) file(id uint64) (*handle, unix.Errno) {
	h := t.byID[id]
	if h == nil || h.dir {
		return nil, unix.EBADF
	}
	return h, 0
}

// dir returns the open directory with id.
func (t *handleTable) dir(id uint64) (*handle, unix.Errno) {
	h := t.byID[id]
	if h == nil || !h.dir {
		return nil, unix.EBADF
	}
	return h, 0
}

// release closes handle id.
func (t *handleTable) release(id uint64) unix.Errno {
	h := t.byID[id]
	if h == nil {
		return unix.EBADF
	}
	delete(t.byID, id)
	t.retained -= len(h.ents)
	unix.Close(h.fd)
	return 0
}

func (t *handleTable) closeAll() {
	for _, h := range t.byID {
		unix.Close(h.fd)
	}
	t.byID = make(map[uint64]*handle)
}
