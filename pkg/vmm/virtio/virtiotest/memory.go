// SPDX-License-Identifier: Apache-2.0

package virtiotest

import (
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
)

// NewMemory returns size bytes of zeroed guest RAM at base, backed by a Go
// slice. It fails the test if the region is invalid.
func NewMemory(tb testing.TB, base memory.GuestAddr, size uint64) *memory.Memory {
	tb.Helper()
	m, err := memory.NewFromBytes(memory.Mapping{Base: base, Data: make([]byte, size)})
	if err != nil {
		tb.Fatalf("virtiotest: NewMemory(%#x, %#x): %v", uint64(base), size, err)
	}
	return m
}
