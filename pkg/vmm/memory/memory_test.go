// SPDX-License-Identifier: Apache-2.0

package memory_test

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
)

func twoRegions(t *testing.T) *memory.Memory {
	t.Helper()
	m, err := memory.NewFromBytes(
		memory.Mapping{Base: 0x10000, Data: make([]byte, 0x1000)},
		memory.Mapping{Base: 0x1000, Data: make([]byte, 0x1000)},
	)
	if err != nil {
		t.Fatalf("NewFromBytes() = %v", err)
	}
	return m
}

func TestSliceBounds(t *testing.T) {
	m := twoRegions(t)
	tests := []struct {
		name string
		addr memory.GuestAddr
		n    uint64
		ok   bool
	}{
		{"start of first", 0x1000, 0x10, true},
		{"whole first", 0x1000, 0x1000, true},
		{"end of first", 0x1ff0, 0x10, true},
		{"crosses end of first", 0x1ff0, 0x11, false},
		{"empty at end", 0x2000, 0, true},
		{"empty inside", 0x1800, 0, true},
		{"empty in gap", 0x3000, 0, false},
		{"below all", 0, 1, false},
		{"in gap", 0x2000, 1, false},
		{"second", 0x10000, 0x1000, true},
		{"past second", 0x11000, 1, false},
		{"huge length", 0x1000, math.MaxUint64, false},
		{"length wraps", 0x1001, math.MaxUint64 - 0x1000, false},
		{"top of space", math.MaxUint64, 1, false},
		{"top of space empty", math.MaxUint64, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := m.Slice(tt.addr, tt.n)
			if tt.ok {
				if err != nil || uint64(len(b)) != tt.n || uint64(cap(b)) != tt.n {
					t.Fatalf("Slice(%#x, %#x) = len %d cap %d, %v; want len %d", tt.addr, tt.n, len(b), cap(b), err, tt.n)
				}
				return
			}
			if !errors.Is(err, memory.ErrOutOfBounds) {
				t.Fatalf("Slice(%#x, %#x) error = %v, want ErrOutOfBounds", tt.addr, tt.n, err)
			}
		})
	}
}

func TestAdjacentRegions(t *testing.T) {
	m, err := memory.NewFromBytes(
		memory.Mapping{Base: 0, Data: make([]byte, 16)},
		memory.Mapping{Base: 16, Data: make([]byte, 16)},
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Slice(16, 4); err != nil {
		t.Errorf("Slice(16, 4) = %v, want nil (second region)", err)
	}
	if _, err := m.Slice(12, 8); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("Slice(12, 8) = %v, want ErrOutOfBounds (spans regions)", err)
	}
}

func TestInvalidRegions(t *testing.T) {
	tests := []struct {
		name string
		maps []memory.Mapping
	}{
		{"none", nil},
		{"empty", []memory.Mapping{{Base: 0, Data: nil}}},
		{"overlap", []memory.Mapping{{Base: 0, Data: make([]byte, 32)}, {Base: 16, Data: make([]byte, 32)}}},
		{"wraps", []memory.Mapping{{Base: math.MaxUint64 - 3, Data: make([]byte, 8)}}},
		{"reaches 2^64", []memory.Mapping{{Base: math.MaxUint64 - 7, Data: make([]byte, 8)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := memory.NewFromBytes(tt.maps...); !errors.Is(err, memory.ErrInvalidRegion) {
				t.Fatalf("NewFromBytes() = %v, want ErrInvalidRegion", err)
			}
		})
	}
}

func TestIntegers(t *testing.T) {
	m := twoRegions(t)
	if err := m.PutUint16(0x1000, 0x1234); err != nil {
		t.Fatal(err)
	}
	if err := m.PutUint32(0x1002, 0x89abcdef); err != nil {
		t.Fatal(err)
	}
	if err := m.PutUint64(0x1008, 0x0102030405060708); err != nil {
		t.Fatal(err)
	}
	if err := m.PutUint8(0x1010, 0xee); err != nil {
		t.Fatal(err)
	}
	want := []byte{0x34, 0x12, 0xef, 0xcd, 0xab, 0x89, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 0xee}
	got := make([]byte, len(want))
	if err := m.Read(0x1000, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("bytes:\nwant %x\ngot  %x", want, got)
	}
	if v, err := m.Uint16(0x1000); v != 0x1234 || err != nil {
		t.Errorf("Uint16(0x1000) = %#x, %v, want 0x1234", v, err)
	}
	if v, err := m.Uint32(0x1002); v != 0x89abcdef || err != nil {
		t.Errorf("Uint32(0x1002) = %#x, %v, want 0x89abcdef", v, err)
	}
	if v, err := m.Uint64(0x1008); v != 0x0102030405060708 || err != nil {
		t.Errorf("Uint64(0x1008) = %#x, %v", v, err)
	}
	if v, err := m.Uint8(0x1010); v != 0xee || err != nil {
		t.Errorf("Uint8(0x1010) = %#x, %v", v, err)
	}
	for _, addr := range []memory.GuestAddr{0x1fff, 0x2000, math.MaxUint64} {
		if _, err := m.Uint16(addr); !errors.Is(err, memory.ErrOutOfBounds) {
			t.Errorf("Uint16(%#x) = %v, want ErrOutOfBounds", addr, err)
		}
		if err := m.PutUint64(addr, 1); !errors.Is(err, memory.ErrOutOfBounds) {
			t.Errorf("PutUint64(%#x) = %v, want ErrOutOfBounds", addr, err)
		}
	}
	if err := m.Write(0x1ffe, []byte{1, 2, 3}); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("Write(0x1ffe, 3 bytes) = %v, want ErrOutOfBounds", err)
	}
	if b, _ := m.Slice(0x1ffe, 2); b[0] != 0 || b[1] != 0 {
		t.Errorf("failed Write modified memory: %x", b)
	}
}

func TestNewMmap(t *testing.T) {
	m, err := memory.New(memory.Region{Base: 0x100000, Size: 1 << 20}, memory.Region{Base: 0, Size: 0x1000})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	if err := m.PutUint64(0x100000+1<<20-8, 42); err != nil {
		t.Fatal(err)
	}
	hr := m.HostRegions()
	if len(hr) != 2 || hr[0].GuestPhysAddr != 0 || hr[1].GuestPhysAddr != 0x100000 || hr[1].Size != 1<<20 || hr[1].UserspaceAddr == 0 {
		t.Fatalf("HostRegions() = %+v", hr)
	}
	if got := m.Size(); got != 1<<20+0x1000 {
		t.Errorf("Size() = %#x", got)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
}

func TestNewInvalid(t *testing.T) {
	for _, rs := range [][]memory.Region{
		nil,
		{{Base: 0x10, Size: 0x1000}},
		{{Base: 0, Size: 0x10}},
		{{Base: 0, Size: 0}},
		{{Base: 0, Size: 0x2000}, {Base: 0x1000, Size: 0x1000}},
	} {
		if _, err := memory.New(rs...); !errors.Is(err, memory.ErrInvalidRegion) {
			t.Errorf("New(%+v) = %v, want ErrInvalidRegion", rs, err)
		}
	}
}

func TestMappingsAndContains(t *testing.T) {
	m := twoRegions(t)
	maps := m.Mappings()
	if len(maps) != 2 || maps[0].Base != 0x1000 || maps[1].Base != 0x10000 {
		t.Fatalf("Mappings() bases = %#x, %#x; want sorted 0x1000, 0x10000", maps[0].Base, maps[1].Base)
	}
	maps[0].Base = 0 // a copy: m is unaffected
	if !m.Contains(0x1000, 0x1000) || m.Contains(0, 1) || m.Contains(0x10fff, 2) {
		t.Fatal("Contains() disagrees with the layout")
	}
}
