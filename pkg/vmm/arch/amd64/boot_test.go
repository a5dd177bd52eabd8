// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

var le = binary.LittleEndian

func testKernel(t *testing.T) *Kernel {
	t.Helper()
	k, err := parse(testKernelELF(), testRAM)
	if err != nil {
		t.Fatalf("ParseELF(test kernel) = %v", err)
	}
	return k
}

// blobAt returns the blob at addr in b.
func blobAt(t *testing.T, b *Boot, addr uint64) []byte {
	t.Helper()
	for _, bl := range b.Blobs {
		if bl.Addr == addr {
			return bl.Data
		}
	}
	t.Fatalf("no blob at %#x in %v boot", addr, b.Protocol)
	return nil
}

func TestDescriptors(t *testing.T) {
	// Values from Firecracker gdt.rs tests and the SDM's flat-segment encoding.
	tests := []struct {
		name  string
		flags uint16
		limit uint32
		want  uint64
		seg   Segment
	}{
		{"code64", flagsCode64, 0xfffff, 0x00af9b000000ffff,
			Segment{Selector: SelectorCode, Limit: 0xffffffff, Type: 0xb, S: true, Present: true, L: true, G: true}},
		{"code32", flagsCode32, 0xfffff, 0x00cf9b000000ffff,
			Segment{Selector: SelectorCode, Limit: 0xffffffff, Type: 0xb, S: true, Present: true, DB: true, G: true}},
		{"data", flagsData, 0xfffff, 0x00cf93000000ffff,
			Segment{Selector: SelectorData, Limit: 0xffffffff, Type: 0x3, S: true, Present: true, DB: true, G: true}},
		{"tss64", flagsTSS64, 0xfffff, 0x008f8b000000ffff,
			Segment{Selector: SelectorTSS, Limit: 0xffffffff, Type: 0xb, Present: true, G: true}},
		{"tss32", flagsTSS32, 0x67, 0x00008b0000000067,
			Segment{Selector: SelectorTSS, Limit: 0x67, Type: 0xb, Present: true}},
	}
	for _, tt := range tests {
		d := descriptor(tt.flags, 0, tt.limit)
		if d != tt.want {
			t.Errorf("descriptor(%s) = %#016x, want %#016x", tt.name, d, tt.want)
		}
		if got := segmentFromDescriptor(tt.seg.Selector, d); got != tt.seg {
			t.Errorf("segmentFromDescriptor(%s) = %+v, want %+v", tt.name, got, tt.seg)
		}
		if got := tt.seg.Descriptor(); got != d {
			t.Errorf("%s Descriptor() = %#016x, want %#016x", tt.name, got, d)
		}
	}
	// A base and a DPL survive the round trip.
	s := Segment{Selector: 0x2b, Base: 0x12345678, Limit: 0xabcde, Type: 0x2, S: true, DPL: 3, Present: true, AVL: true, DB: true}
	if got := segmentFromDescriptor(s.Selector, s.Descriptor()); got != s {
		t.Errorf("round trip of %+v = %+v", s, got)
	}
}

func TestPageTables(t *testing.T) {
	pt := pageTables()
	if pt.Addr != PML4Addr || len(pt.Data) != (2+PDCount)*PageSize {
		t.Fatalf("pageTables() at %#x, %d bytes, want %#x, %d", pt.Addr, len(pt.Data), PML4Addr, (2+PDCount)*PageSize)
	}
	entry := func(addr uint64, i int) uint64 { return le.Uint64(pt.Data[addr-PML4Addr+uint64(8*i):]) }
	if got := entry(PML4Addr, 0); got != PDPTAddr|3 {
		t.Errorf("PML4[0] = %#x, want %#x", got, PDPTAddr|3)
	}
	for i := 1; i < 512; i++ {
		if got := entry(PML4Addr, i); got != 0 {
			t.Errorf("PML4[%d] = %#x, want 0", i, got)
		}
	}
	for i := range 512 {
		want := uint64(0)
		if i < PDCount {
			want = PDAddr + uint64(i)*PageSize | 3
		}
		if got := entry(PDPTAddr, i); got != want {
			t.Errorf("PDPT[%d] = %#x, want %#x", i, got, want)
		}
	}
	// Walk every 2 MiB page: the translation must be the identity.
	for va := uint64(0); va < IdentityMapBytes; va += 2 << 20 {
		pdpte := entry(PDPTAddr, int(va>>30&511))
		pde := entry(pdpte&^0xfff, int(va>>21&511))
		if pde&0x83 != 0x83 || pde&^0x1fffff != va {
			t.Fatalf("translation of %#x: PDE %#x, want %#x", va, pde, va|0x83)
		}
	}
}

func TestBootPVH(t *testing.T) {
	k := testKernel(t)
	const initrdSize = 0x3000
	cfg := BootConfig{RAMBytes: testRAM, VCPUs: 2, Cmdline: "console=ttyS0", InitrdSize: initrdSize}
	b, err := BootPVH(k, cfg)
	if err != nil {
		t.Fatalf("BootPVH = %v", err)
	}
	if b.Protocol != ProtocolPVH || b.Protocol.String() != "pvh" {
		t.Errorf("Protocol = %v, want pvh", b.Protocol)
	}
	wantInitrd := Region{Start: testRAM - initrdSize, Size: initrdSize}
	if b.Initrd != wantInitrd {
		t.Errorf("Initrd = %+v, want %+v", b.Initrd, wantInitrd)
	}

	si := blobAt(t, b, PVHStartInfoAddr)
	for _, f := range []struct {
		name string
		got  uint64
		want uint64
	}{
		{"magic", uint64(le.Uint32(si[0x00:])), PVHMagic},
		{"version", uint64(le.Uint32(si[0x04:])), 1},
		{"flags", uint64(le.Uint32(si[0x08:])), 0},
		{"nr_modules", uint64(le.Uint32(si[0x0c:])), 1},
		{"modlist_paddr", le.Uint64(si[0x10:]), PVHModlistAddr},
		{"cmdline_paddr", le.Uint64(si[0x18:]), CmdlineAddr},
		{"rsdp_paddr", le.Uint64(si[0x20:]), 0},
		{"memmap_paddr", le.Uint64(si[0x28:]), PVHMemmapAddr},
		{"memmap_entries", uint64(le.Uint32(si[0x30:])), 3},
		{"reserved", uint64(le.Uint32(si[0x34:])), 0},
		{"size", uint64(len(si)), 0x38},
	} {
		if f.got != f.want {
			t.Errorf("hvm_start_info.%s = %#x, want %#x", f.name, f.got, f.want)
		}
	}
	mod := blobAt(t, b, PVHModlistAddr)
	if len(mod) != 32 || le.Uint64(mod[0:]) != wantInitrd.Start || le.Uint64(mod[8:]) != initrdSize ||
		le.Uint64(mod[16:]) != 0 || le.Uint64(mod[24:]) != 0 {
		t.Errorf("hvm_modlist_entry = %x, want paddr %#x size %#x", mod, wantInitrd.Start, initrdSize)
	}
	mm := blobAt(t, b, PVHMemmapAddr)
	want := E820Map(testRAM)
	if len(mm) != 24*len(want) {
		t.Fatalf("memmap is %d bytes, want %d", len(mm), 24*len(want))
	}
	for i, w := range want {
		e := mm[24*i:]
		got := E820Entry{Addr: le.Uint64(e), Size: le.Uint64(e[8:]), Type: le.Uint32(e[16:])}
		if got != w || le.Uint32(e[20:]) != 0 {
			t.Errorf("memmap[%d] = %+v, want %+v", i, got, w)
		}
	}
	if cmd := blobAt(t, b, CmdlineAddr); string(cmd) != "console=ttyS0\x00" {
		t.Errorf("cmdline blob = %q", cmd)
	}
	if g := blobAt(t, b, GDTAddr); le.Uint64(g[8:]) != gdt32[1] || le.Uint64(g[16:]) != gdt32[2] || le.Uint64(g[24:]) != gdt32[3] || le.Uint64(g) != 0 {
		t.Errorf("gdt blob = %x, want the 32-bit GDT", g)
	}

	// Registers per docs/misc/pvh.pandoc.
	r, s := b.Regs, b.SRegs
	if r.RIP != testPVH || r.RBX != PVHStartInfoAddr || r.RFLAGS != 2 || r.RSI != 0 || r.RSP != 0 {
		t.Errorf("Regs = %+v, want RIP %#x RBX %#x RFLAGS 2", r, testPVH, PVHStartInfoAddr)
	}
	if s.CR0 != CR0PE|CR0ET || s.CR0&CR0PG != 0 || s.CR3 != 0 || s.CR4 != 0 || s.EFER != 0 {
		t.Errorf("CR0 %#x CR3 %#x CR4 %#x EFER %#x, want protected mode without paging", s.CR0, s.CR3, s.CR4, s.EFER)
	}
	if c := s.CS; c.Base != 0 || c.Limit != 0xffffffff || !c.DB || c.L || c.Type != 0xb || !c.S || !c.Present || c.Selector != SelectorCode {
		t.Errorf("CS = %+v, want flat 32-bit code", c)
	}
	for name, d := range map[string]Segment{"DS": s.DS, "ES": s.ES, "FS": s.FS, "GS": s.GS, "SS": s.SS} {
		if d.Base != 0 || d.Limit != 0xffffffff || !d.DB || d.Type != 0x3 || d.Selector != SelectorData {
			t.Errorf("%s = %+v, want flat 32-bit data", name, d)
		}
	}
	if s.TR.Limit != 0x67 || s.TR.Type != 0xb || s.TR.S || s.TR.Selector != SelectorTSS {
		t.Errorf("TR = %+v, want 32-bit TSS of limit 0x67", s.TR)
	}
	if s.GDT != (DescriptorTable{GDTAddr, 31}) || s.IDT != (DescriptorTable{IDTAddr, 7}) {
		t.Errorf("GDT %+v IDT %+v", s.GDT, s.IDT)
	}
	if b.FPU != (FPU{FCW: 0x37f, MXCSR: 0x1f80}) {
		t.Errorf("FPU = %+v", b.FPU)
	}
}

func TestBootPVHWithoutInitrd(t *testing.T) {
	b, err := BootPVH(testKernel(t), BootConfig{RAMBytes: 8 << 30, VCPUs: 1})
	if err != nil {
		t.Fatalf("BootPVH = %v", err)
	}
	si := blobAt(t, b, PVHStartInfoAddr)
	if n, p := le.Uint32(si[0x0c:]), le.Uint64(si[0x10:]); n != 0 || p != 0 {
		t.Errorf("nr_modules, modlist_paddr = %d, %#x, want 0, 0", n, p)
	}
	if n := le.Uint32(si[0x30:]); n != 4 {
		t.Errorf("memmap_entries = %d, want 4 with high ram", n)
	}
	for _, bl := range b.Blobs {
		if bl.Addr == PVHModlistAddr {
			t.Errorf("modlist blob present without an initrd")
		}
	}
	if b.Initrd.Size != 0 {
		t.Errorf("Initrd = %+v, want none", b.Initrd)
	}
}

func TestBootLinux64(t *testing.T) {
	k := testKernel(t)
	const initrdSize = 0x1800
	cmdline := "console=ttyS0 panic=1"
	b, err := BootLinux64(k, BootConfig{RAMBytes: 8 << 30, VCPUs: 4, Cmdline: cmdline, InitrdSize: initrdSize})
	if err != nil {
		t.Fatalf("BootLinux64 = %v", err)
	}
	if b.Protocol != ProtocolLinux64 || b.Protocol.String() != "linux64" {
		t.Errorf("Protocol = %v, want linux64", b.Protocol)
	}
	initrd := uint64(MMIOGapStart - 0x2000)
	if b.Initrd != (Region{initrd, initrdSize}) {
		t.Errorf("Initrd = %+v, want at %#x", b.Initrd, initrd)
	}
	zp := blobAt(t, b, ZeroPageAddr)
	if len(zp) != 4096 {
		t.Fatalf("zero page is %d bytes", len(zp))
	}
	for _, f := range []struct {
		name      string
		got, want uint64
	}{
		{"boot_flag", uint64(le.Uint16(zp[0x1fe:])), 0xaa55},
		{"header", uint64(le.Uint32(zp[0x202:])), 0x53726448},
		{"type_of_loader", uint64(zp[0x210]), 0xff},
		{"loadflags", uint64(zp[0x211]), 1},
		{"ramdisk_image", uint64(le.Uint32(zp[0x218:])), initrd},
		{"ramdisk_size", uint64(le.Uint32(zp[0x21c:])), initrdSize},
		{"cmd_line_ptr", uint64(le.Uint32(zp[0x228:])), CmdlineAddr},
		{"kernel_alignment", uint64(le.Uint32(zp[0x230:])), 16 << 20},
		{"cmdline_size", uint64(le.Uint32(zp[0x238:])), uint64(len(cmdline))},
		{"e820_entries", uint64(zp[0x1e8]), 4},
	} {
		if f.got != f.want {
			t.Errorf("boot_params.%s = %#x, want %#x", f.name, f.got, f.want)
		}
	}
	if string(zp[0x202:0x206]) != "HdrS" {
		t.Errorf("header = %q, want HdrS", zp[0x202:0x206])
	}
	for i, w := range E820Map(8 << 30) {
		e := zp[0x2d0+20*i:]
		got := E820Entry{Addr: le.Uint64(e), Size: le.Uint64(e[8:]), Type: le.Uint32(e[16:])}
		if got != w {
			t.Errorf("e820_table[%d] = %+v, want %+v", i, got, w)
		}
	}
	if pt := blobAt(t, b, PML4Addr); len(pt) != (2+PDCount)*PageSize {
		t.Errorf("page table blob is %d bytes", len(pt))
	}
	if g := blobAt(t, b, GDTAddr); le.Uint64(g[8:]) != 0x00af9b000000ffff {
		t.Errorf("gdt code descriptor = %#x, want 64-bit code", le.Uint64(g[8:]))
	}

	r, s := b.Regs, b.SRegs
	if r.RIP != testEntry || r.RSI != ZeroPageAddr || r.RSP != BootStackPointer || r.RBP != BootStackPointer || r.RFLAGS != 2 || r.RBX != 0 {
		t.Errorf("Regs = %+v", r)
	}
	if s.CR0 != 0x80000011 || s.CR3 != PML4Addr || s.CR4 != 0x20 || s.EFER != 0x500 {
		t.Errorf("CR0 %#x CR3 %#x CR4 %#x EFER %#x, want long mode", s.CR0, s.CR3, s.CR4, s.EFER)
	}
	if c := s.CS; !c.L || c.DB || c.Type != 0xb || c.Selector != SelectorCode {
		t.Errorf("CS = %+v, want 64-bit code", c)
	}
	if s.SS != s.DS || s.DS.Type != 3 || s.TR.Type != 0xb || s.TR.S {
		t.Errorf("data %+v TR %+v", s.DS, s.TR)
	}
}

func TestPlan(t *testing.T) {
	k := testKernel(t)
	cfg := BootConfig{RAMBytes: testRAM, VCPUs: 1, InitrdSize: 1 << 20}
	pvh, err := Plan(k, cfg)
	if err != nil || pvh.Protocol != ProtocolPVH {
		t.Fatalf("Plan(pvh kernel) = %v, %v, want pvh", pvh, err)
	}
	noPVH := *k
	noPVH.HasPVH = false
	linux, err := Plan(&noPVH, cfg)
	if err != nil || linux.Protocol != ProtocolLinux64 {
		t.Fatalf("Plan(kernel without note) = %v, %v, want linux64", linux, err)
	}
	if _, err := BootPVH(&noPVH, cfg); !errors.Is(err, ErrNoPVHNote) {
		t.Errorf("BootPVH(kernel without note) = %v, want ErrNoPVHNote", err)
	}
	for _, b := range []*Boot{pvh, linux} {
		for i, bl := range b.Blobs {
			end := bl.Addr + uint64(len(bl.Data))
			if i+1 < len(b.Blobs) && end > b.Blobs[i+1].Addr || end > HighMemStart {
				t.Errorf("%v: blob [%#x, %#x) overlaps the next or leaves low memory", b.Protocol, bl.Addr, end)
			}
		}
		if b.Initrd.Start < k.End || b.Initrd.End() > testRAM {
			t.Errorf("%v: initrd %+v overlaps the kernel or leaves ram", b.Protocol, b.Initrd)
		}
	}
}

func TestBootErrors(t *testing.T) {
	k := testKernel(t)
	ok := BootConfig{RAMBytes: testRAM, VCPUs: 2}
	tests := []struct {
		name   string
		mutate func(*BootConfig)
		want   error
	}{
		{"no vcpus", func(c *BootConfig) { c.VCPUs = 0 }, ErrInvalidConfig},
		{"too many vcpus", func(c *BootConfig) { c.VCPUs = MaxVCPUs + 1 }, ErrInvalidConfig},
		{"ram unaligned", func(c *BootConfig) { c.RAMBytes++ }, ErrInvalidConfig},
		{"ram too small", func(c *BootConfig) { c.RAMBytes = 1 << 20 }, ErrInvalidConfig},
		{"kernel beyond ram", func(c *BootConfig) { c.RAMBytes = 16 << 20 }, ErrKernelPlacement},
		{"cmdline too long", func(c *BootConfig) { c.Cmdline = strings.Repeat("x", CmdlineMaxSize) }, ErrInvalidConfig},
		{"initrd too large", func(c *BootConfig) { c.InitrdSize = testRAM }, ErrInvalidConfig},
	}
	for _, tt := range tests {
		for _, boot := range []func(*Kernel, BootConfig) (*Boot, error){BootPVH, BootLinux64} {
			cfg := ok
			tt.mutate(&cfg)
			if b, err := boot(k, cfg); !errors.Is(err, tt.want) {
				t.Errorf("%s: boot = %v, %v, want %v", tt.name, b, err, tt.want)
			}
		}
	}
	if _, err := BootLinux64(&Kernel{}, ok); !errors.Is(err, ErrInvalidKernel) {
		t.Errorf("BootLinux64(empty kernel) = %v, want ErrInvalidKernel", err)
	}
}

func TestZeroPageErrors(t *testing.T) {
	if _, err := zeroPage(make([]E820Entry, ZeroPageMaxE820+1), 0, Region{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("zeroPage(129 entries) = %v, want ErrInvalidConfig", err)
	}
	if _, err := zeroPage(nil, 0, Region{Start: 1<<32 - 0x1000, Size: 0x2000}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("zeroPage(initrd across 4 GiB) = %v, want ErrInvalidConfig", err)
	}
	if _, err := pvhStartInfo(make([]E820Entry, PVHMemmapMaxEntries+1), Region{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("pvhStartInfo(129 entries) = %v, want ErrInvalidConfig", err)
	}
}

func TestProtocolString(t *testing.T) {
	if got := Protocol(7).String(); got != "Protocol(7)" {
		t.Errorf("Protocol(7).String() = %q", got)
	}
}
