// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"syscall"
	"testing"
)

// TestShareTablesFitTheLimit checks that the tables shareTables sizes fit
// in the RLIMIT_NOFILE it leaves: every node and handle holds a host fd.
func TestShareTablesFitTheLimit(t *testing.T) {
	if n, h := shareTables(0); n != 0 || h != 0 {
		t.Errorf("shareTables(0) = %d, %d; want the defaults (0, 0)", n, h)
	}
	for _, shares := range []int{1, 3} {
		nodes, handles := shareTables(shares)
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		if nodes < 1 || handles < 1 {
			t.Fatalf("shareTables(%d) = %d, %d", shares, nodes, handles)
		}
		if need := uint64(shares*(nodes+handles) + fdReserve); lim.Cur < need {
			t.Errorf("shareTables(%d) = %d nodes, %d handles: %d fds, over RLIMIT_NOFILE %d", shares, nodes, handles, need, lim.Cur)
		}
		t.Logf("%d shares: %d nodes, %d handles each; RLIMIT_NOFILE %d", shares, nodes, handles, lim.Cur)
	}
}
