// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestLayoutDisjoint checks that the fixed boot structures do not overlap
// and stay where the kernel expects them.
func TestLayoutDisjoint(t *testing.T) {
	areas := []struct {
		name       string
		start, end uint64
	}{
		{"gdt", GDTAddr, GDTAddr + 8*4},
		{"idt", IDTAddr, IDTAddr + 8},
		{"pvh start info", PVHStartInfoAddr, PVHStartInfoAddr + pvhStartInfoSize},
		{"pvh modlist", PVHModlistAddr, PVHModlistAddr + pvhModlistEntrySize},
		{"pvh memmap", PVHMemmapAddr, PVHMemmapAddr + PVHMemmapMaxEntries*pvhMemmapEntrySize},
		{"zero page", ZeroPageAddr, ZeroPageAddr + zeroPageSize},
		{"boot stack", BootStackPointer - 0x100, BootStackPointer},
		{"page tables", PML4Addr, PDAddr + PDCount*PageSize},
		{"cmdline", CmdlineAddr, CmdlineAddr + CmdlineMaxSize},
		{"mp table", MPTableAddr, HighMemStart},
		{"low ram", HighMemStart, MMIOGapStart},
		{"virtio mmio", VirtioMMIOBase, VirtioMMIOBase + VirtioMaxDevices*VirtioMMIOSlotSize},
		{"ioapic", IOAPICAddr, IOAPICAddr + 0x1000},
		{"lapic", LAPICAddr, LAPICAddr + 0x1000},
		{"high ram", HighRAMStart, HighRAMStart + 1},
	}
	for i := 1; i < len(areas); i++ {
		a, b := areas[i-1], areas[i]
		if a.end > b.start {
			t.Errorf("%s [%#x, %#x) overlaps %s [%#x, %#x)", a.name, a.start, a.end, b.name, b.start, b.end)
		}
	}
	if PDPTAddr != PML4Addr+PageSize || PDAddr != PDPTAddr+PageSize {
		t.Errorf("page tables not contiguous: %#x %#x %#x", PML4Addr, PDPTAddr, PDAddr)
	}
	if VirtioMMIOBase+VirtioMaxDevices*VirtioMMIOSlotSize > VirtioMMIOEnd {
		t.Errorf("virtio slots run past %#x", VirtioMMIOEnd)
	}
	if MMIOGapStart%PageSize != 0 || IdentityMapBytes < MMIOGapStart {
		t.Errorf("identity map %#x does not cover low ram up to %#x", IdentityMapBytes, MMIOGapStart)
	}
}

func TestMemoryRegions(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		ram  uint64
		want []Region
	}{
		{0, nil},
		{128 << 20, []Region{{0, 128 << 20}}},
		{MMIOGapStart, []Region{{0, MMIOGapStart}}},
		{MMIOGapStart + PageSize, []Region{{0, MMIOGapStart}, {HighRAMStart, PageSize}}},
		{8 * gib, []Region{{0, MMIOGapStart}, {HighRAMStart, 8*gib - MMIOGapStart}}},
	}
	for _, tt := range tests {
		got := MemoryRegions(tt.ram)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("MemoryRegions(%#x) = %+v, want %+v", tt.ram, got, tt.want)
		}
		var sum uint64
		for _, r := range got {
			sum += r.Size
			if r.Start < MMIOGapEnd && r.End() > MMIOGapStart {
				t.Errorf("MemoryRegions(%#x): %+v overlaps the mmio gap", tt.ram, r)
			}
		}
		if sum != tt.ram {
			t.Errorf("MemoryRegions(%#x) covers %#x bytes, want %#x", tt.ram, sum, tt.ram)
		}
	}
}

func TestRegionContains(t *testing.T) {
	r := Region{Start: 0x1000, Size: 0x1000}
	tests := []struct {
		addr, size uint64
		want       bool
	}{
		{0x1000, 0x1000, true},
		{0x1800, 0x800, true},
		{0x2000, 0, true},
		{0xfff, 1, false},
		{0x1800, 0x801, false},
		{0x1800, ^uint64(0), false},
		{0x2001, 0, false},
	}
	for _, tt := range tests {
		if got := r.Contains(tt.addr, tt.size); got != tt.want {
			t.Errorf("%+v.Contains(%#x, %#x) = %v, want %v", r, tt.addr, tt.size, got, tt.want)
		}
	}
}

func TestValidateRAM(t *testing.T) {
	tests := []struct {
		ram uint64
		ok  bool
	}{
		{0, false},
		{MinRAMBytes - PageSize, false},
		{MinRAMBytes, true},
		{128 << 20, true},
		{128<<20 + 1, false},
		{MaxRAMBytes, true},
		{MaxRAMBytes + PageSize, false},
	}
	for _, tt := range tests {
		err := ValidateRAM(tt.ram)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ValidateRAM(%#x) = %v, want ok %v", tt.ram, err, tt.ok)
		}
	}
}

func TestE820Map(t *testing.T) {
	low := []E820Entry{{0, EBDAStart, E820RAM}, {EBDAStart, HighMemStart - EBDAStart, E820Reserved}}
	tests := []struct {
		ram  uint64
		want []E820Entry
	}{
		{128 << 20, append(low[:2:2], E820Entry{HighMemStart, 127 << 20, E820RAM})},
		{MMIOGapStart, append(low[:2:2], E820Entry{HighMemStart, MMIOGapStart - HighMemStart, E820RAM})},
		{8 << 30, append(low[:2:2],
			E820Entry{HighMemStart, MMIOGapStart - HighMemStart, E820RAM},
			E820Entry{HighRAMStart, 8<<30 - MMIOGapStart, E820RAM})},
	}
	for _, tt := range tests {
		if got := E820Map(tt.ram); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("E820Map(%#x) = %+v, want %+v", tt.ram, got, tt.want)
		}
	}
}

func TestInitrdAddr(t *testing.T) {
	tests := []struct {
		name                 string
		ram, size, kernelEnd uint64
		want                 uint64
		ok                   bool
	}{
		{"top of small ram", 128 << 20, 0x1000, 32 << 20, 128<<20 - 0x1000, true},
		{"unaligned size rounds down", 128 << 20, 0x1001, 32 << 20, 128<<20 - 0x2000, true},
		{"below the gap", 8 << 30, 1 << 20, 32 << 20, MMIOGapStart - 1<<20, true},
		{"fills ram above the kernel", 64 << 20, 32 << 20, 32 << 20, 32 << 20, true},
		{"unaligned kernel end", 64 << 20, 32<<20 - 0x1000, 32<<20 + 1, 32<<20 + 0x1000, true},
		{"overlaps the kernel", 64 << 20, 32<<20 + 1, 32 << 20, 0, false},
		{"larger than ram", 64 << 20, 1 << 30, 0, 0, false},
		{"empty", 64 << 20, 0, 32 << 20, 0, false},
		{"kernel beyond ram", 64 << 20, 0x1000, 1 << 40, 0, false},
		{"kernel end at the top", 64 << 20, 0x1000, ^uint64(0), 0, false},
	}
	for _, tt := range tests {
		got, err := InitrdAddr(tt.ram, tt.size, tt.kernelEnd)
		if tt.ok && (err != nil || got != tt.want) || !tt.ok && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: InitrdAddr(%#x, %#x, %#x) = %#x, %v, want %#x, ok %v", tt.name, tt.ram, tt.size, tt.kernelEnd, got, err, tt.want, tt.ok)
		}
		if err == nil && (got%PageSize != 0 || got+tt.size > LowRAMEnd(tt.ram)) {
			t.Errorf("%s: InitrdAddr = %#x misplaced", tt.name, got)
		}
	}
}

func TestCmdlineBytes(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"", "\x00", true},
		{"console=ttyS0 reboot=k", "console=ttyS0 reboot=k\x00", true},
		{strings.Repeat("a", CmdlineMaxSize-1), strings.Repeat("a", CmdlineMaxSize-1) + "\x00", true},
		{strings.Repeat("a", CmdlineMaxSize), "", false},
		{"a\x00b", "", false},
	}
	for _, tt := range tests {
		got, err := CmdlineBytes(tt.in)
		if tt.ok && (err != nil || string(got) != tt.want) || !tt.ok && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("CmdlineBytes(%.20q) = %.20q, %v, want %.20q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestVirtioMMIOSlot(t *testing.T) {
	tests := []struct {
		i    int
		base uint64
		irq  uint32
		ok   bool
	}{
		{0, 0xd000_0000, 5, true},
		{1, 0xd000_1000, 6, true},
		{18, 0xd001_2000, 23, true},
		{19, 0, 0, false},
		{-1, 0, 0, false},
	}
	for _, tt := range tests {
		base, irq, err := VirtioMMIOSlot(tt.i)
		if tt.ok && (err != nil || base != tt.base || irq != tt.irq) || !tt.ok && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("VirtioMMIOSlot(%d) = %#x, %d, %v, want %#x, %d, ok %v", tt.i, base, irq, err, tt.base, tt.irq, tt.ok)
		}
	}
}
