// SPDX-License-Identifier: Apache-2.0

package amd64

import "encoding/binary"

// Segment is a segment register as KVM loads it (struct kvm_segment in
// linux/kvm.h): the descriptor fields unpacked, the limit in bytes.
type Segment struct {
	// Selector is the value of the segment register: GDT index << 3.
	Selector uint16
	// Base is the segment base address.
	Base uint64
	// Limit is the last valid byte offset; with G set it is the
	// descriptor's 20-bit limit scaled to 4 KiB units (limit<<12 | 0xfff).
	Limit uint32
	// Type is the 4-bit descriptor type (SDM vol. 3A §3.4.5.1, §3.5).
	Type uint8
	// S is set for code and data segments, clear for system segments (TSS).
	S bool
	// DPL is the descriptor privilege level, 0..3.
	DPL uint8
	// Present is the P bit.
	Present bool
	// AVL is the bit available to software.
	AVL bool
	// L marks a 64-bit code segment.
	L bool
	// DB is the default operation size bit: set for 32-bit segments.
	DB bool
	// G scales the limit by 4 KiB.
	G bool
}

// Descriptor returns s encoded as an 8-byte segment descriptor (SDM vol. 3A
// §3.4.5, figure 3-8).
func (s Segment) Descriptor() uint64 {
	limit := s.Limit
	if s.G {
		limit >>= 12
	}
	d := uint64(limit&0xffff) |
		(s.Base&0xff_ffff)<<16 |
		uint64(s.Type&0xf)<<40 |
		uint64(s.DPL&3)<<45 |
		(uint64(limit>>16)&0xf)<<48 |
		(s.Base>>24&0xff)<<56
	for _, b := range []struct {
		set bool
		bit uint
	}{{s.S, 44}, {s.Present, 47}, {s.AVL, 52}, {s.L, 53}, {s.DB, 54}, {s.G, 55}} {
		if b.set {
			d |= 1 << b.bit
		}
	}
	return d
}

// segmentFromDescriptor unpacks descriptor d loaded with selector sel, as
// Firecracker's kvm_segment_from_gdt does.
func segmentFromDescriptor(sel uint16, d uint64) Segment {
	s := Segment{
		Selector: sel,
		Base:     (d>>16)&0xff_ffff | (d>>56&0xff)<<24,
		Limit:    uint32(d&0xffff | (d>>48&0xf)<<16),
		Type:     uint8(d >> 40 & 0xf),
		S:        d>>44&1 == 1,
		DPL:      uint8(d >> 45 & 3),
		Present:  d>>47&1 == 1,
		AVL:      d>>52&1 == 1,
		L:        d>>53&1 == 1,
		DB:       d>>54&1 == 1,
		G:        d>>55&1 == 1,
	}
	if s.G {
		s.Limit = s.Limit<<12 | 0xfff
	}
	return s
}

// descriptor builds a segment descriptor from Firecracker's 16-bit flag
// notation (gdt.rs gdt_entry): bits 0-7 are descriptor byte 5 (type, S,
// DPL, P), bits 12-15 the high nibble of byte 6 (AVL, L, DB, G).
func descriptor(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff00_0000)<<32 |
		uint64(flags&0xf0ff)<<40 |
		uint64(limit&0xf_0000)<<32 |
		uint64(base&0xff_ffff)<<16 |
		uint64(limit&0xffff)
}

// Descriptor flags in Firecracker's notation (regs.rs configure_segments_and_sregs).
const (
	// flagsCode64: P, DPL 0, S, type 0xb (execute/read, accessed), L, G.
	flagsCode64 = 0xa09b
	// flagsCode32: as flagsCode64 with DB instead of L.
	flagsCode32 = 0xc09b
	// flagsData: P, DPL 0, S, type 0x3 (read/write, accessed), DB, G.
	flagsData = 0xc093
	// flagsTSS64: P, type 0xb (busy TSS), G.
	flagsTSS64 = 0x808b
	// flagsTSS32: P, type 0xb (busy TSS), byte granular; the PVH ABI
	// (docs/misc/pvh.pandoc) asks for a TSS with base 0 and limit 0x67.
	flagsTSS32 = 0x008b
)

// GDT selectors: the GDT index times 8, table indicator and RPL zero
// (SDM vol. 3A §3.4.2). Index 0 is the mandatory null descriptor.
const (
	// SelectorCode is the CS selector at entry.
	SelectorCode = 1 << 3
	// SelectorData is the DS, ES, FS, GS and SS selector at entry.
	SelectorData = 2 << 3
	// SelectorTSS is the TR selector at entry.
	SelectorTSS = 3 << 3
)

// gdt holds the four descriptors of a boot GDT: null, code, data, TSS.
type gdt [4]uint64

// gdt64 is the boot GDT for the Linux 64-bit entry (Firecracker regs.rs).
var gdt64 = gdt{
	0,
	descriptor(flagsCode64, 0, 0xfffff),
	descriptor(flagsData, 0, 0xfffff),
	descriptor(flagsTSS64, 0, 0xfffff),
}

// gdt32 is the boot GDT for the PVH 32-bit entry: flat 4 GiB code and data
// (Firecracker regs.rs, PVH ABI docs/misc/pvh.pandoc).
var gdt32 = gdt{
	0,
	descriptor(flagsCode32, 0, 0xfffff),
	descriptor(flagsData, 0, 0xfffff),
	descriptor(flagsTSS32, 0, 0x67),
}

// bytes returns the GDT as it sits in guest memory, little endian.
func (g gdt) bytes() []byte {
	b := make([]byte, 0, 8*len(g))
	for _, d := range g {
		b = binary.LittleEndian.AppendUint64(b, d)
	}
	return b
}

// table returns the GDTR value for g at GDTAddr.
func (g gdt) table() DescriptorTable {
	return DescriptorTable{Base: GDTAddr, Limit: uint16(8*len(g) - 1)}
}

// segments returns the segment registers loaded from g: code, data, TSS.
func (g gdt) segments() (code, data, tss Segment) {
	return segmentFromDescriptor(SelectorCode, g[1]),
		segmentFromDescriptor(SelectorData, g[2]),
		segmentFromDescriptor(SelectorTSS, g[3])
}

// idtBytes is the boot IDT: one zero (not present) gate, so an early
// exception shuts the guest down instead of jumping to garbage.
func idtBytes() []byte { return make([]byte, 8) }

// idtTable is the IDTR value for the boot IDT at IDTAddr.
var idtTable = DescriptorTable{Base: IDTAddr, Limit: 7}
