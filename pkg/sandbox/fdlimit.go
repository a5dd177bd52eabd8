// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"
)

// fdReserve is what the sandbox process keeps of RLIMIT_NOFILE for itself
// (devices, eventfds, the agent socket and its connections, logs) when it
// sizes the shares' tables.
const fdReserve = 1024

// shareTables raises the process's RLIMIT_NOFILE so that n shares can hold
// their full node and handle tables (each entry is a host fd), up to what
// the kernel allows (fs.nr_open; raising the hard limit needs root), and
// returns table sizes that fit in the limit it got. Without this a guest
// that creates a few thousand files in a share would exhaust the process's
// descriptors (EMFILE), and with them the agent socket; with it the guest
// meets ENFILE from the share first and the sandbox keeps working.
//
// In the nested harness long share runs end in guest triple faults more
// often the more they do (1500 files: 0 of 4 runs, 4050: 1 of 2), the
// harness's exchanged-state failure; holding 6000 more host fds in the
// sandbox process changed nothing (3500 files: 0 of 2).
func shareTables(n int) (maxNodes, maxHandles int) {
	if n == 0 {
		return 0, 0
	}
	want := uint64(n*(fuse.DefaultMaxNodes+fuse.DefaultMaxHandles) + fdReserve)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if nrOpen, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && nrOpen < want {
			want = nrOpen
		}
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0 // the defaults; nothing better to go on
	}
	if lim.Cur < want {
		raised := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) != nil {
			// Not root: as far as the hard limit goes.
			raised = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised)
		}
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	perShare := 0
	if lim.Cur > fdReserve {
		perShare = int((lim.Cur - fdReserve) / uint64(n))
	}
	// A guest holds many more inodes (its dentry cache) than open files.
	maxNodes = min(fuse.DefaultMaxNodes, max(perShare*3/4, 1))
	maxHandles = min(fuse.DefaultMaxHandles, max(perShare/4, 1))
	if maxNodes < fuse.DefaultMaxNodes {
		fmt.Fprintf(os.Stderr, "sandbox process: RLIMIT_NOFILE is %d: each of %d shares holds at most %d nodes and %d handles\n", lim.Cur, n, maxNodes, maxHandles)
	}
	return maxNodes, maxHandles
}
