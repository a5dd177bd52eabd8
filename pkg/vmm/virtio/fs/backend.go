// SPDX-License-Identifier: Apache-2.0

package fs

import "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"

// Backend answers FUSE requests; *fuse.Server is the one the sandbox uses,
// and tests may supply another.
type Backend interface {
	// ServeScattered handles one request: head is the device's copy of
	// its first min(fuse.HeadSize, length) bytes, tail the rest in guest
	// memory, reply the chain's writable buffers in guest memory and
	// scratch a buffer of fuse.MaxReplySize bytes. It returns the reply
	// length, 0 for none, and keeps none of the buffers (see
	// fuse.Server.ServeScattered).
	ServeScattered(head []byte, tail, reply [][]byte, scratch []byte) int
	// Reset ends the FUSE session: the driver was reset and will start
	// again with FUSE_INIT.
	Reset()
	// Close releases the backend's host resources.
	Close() error
}

var _ Backend = (*fuse.Server)(nil)
