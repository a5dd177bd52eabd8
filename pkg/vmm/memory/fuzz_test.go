// SPDX-License-Identifier: Apache-2.0

package memory_test

import (
	"math"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
)

func FuzzSlice(f *testing.F) {
	f.Add(uint64(0x1000), uint64(16))
	f.Add(uint64(math.MaxUint64), uint64(1))
	f.Add(uint64(0x1fff), uint64(math.MaxUint64))
	m, err := memory.NewFromBytes(
		memory.Mapping{Base: 0x1000, Data: make([]byte, 0x1000)},
		memory.Mapping{Base: 0x2000, Data: make([]byte, 0x100)},
	)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, addr, n uint64) {
		b, err := m.Slice(memory.GuestAddr(addr), n)
		if err != nil {
			return
		}
		if uint64(len(b)) != n {
			t.Fatalf("Slice(%#x, %#x) len %d", addr, n, len(b))
		}
		inFirst := addr >= 0x1000 && addr <= 0x2000 && n <= 0x2000-addr
		inSecond := addr >= 0x2000 && addr <= 0x2100 && n <= 0x2100-addr
		if !inFirst && !inSecond {
			t.Fatalf("Slice(%#x, %#x) succeeded outside RAM", addr, n)
		}
	})
}
