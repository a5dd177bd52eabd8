// SPDX-License-Identifier: Apache-2.0

package fs

import "github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"

// Backend answers FUSE requests; *fuse.Server is the one the sandbox uses,
// and tests may supply another.
type Backend interface {
	// Serve handles the request in req, writes the reply into reply
	// (which may be empty) and returns its length, 0 for none. It must
	// not keep req or reply.
	Serve(req, reply []byte) int
	// Reset ends the FUSE session: the driver was reset and will start
	// again with FUSE_INIT.
	Reset()
	// Close releases the backend's host resources.
	Close() error
}

var _ Backend = (*fuse.Server)(nil)
