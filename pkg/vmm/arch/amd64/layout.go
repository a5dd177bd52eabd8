// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"fmt"
	"strings"
)

// The guest physical memory map. Every address the boot code uses is defined
// here and nowhere else. Values follow Firecracker's
// src/vmm/src/arch/x86_64/layout.rs unless the doc comment says otherwise.
//
//	guest physical                                          e820 type
//	0x0_0000_0000 +--------------------------------------+ RAM
//	              | real-mode IVT and BDA (left zero)    |
//	0x0_0000_0500 | GDT, 4 descriptors                   |
//	0x0_0000_0520 | IDT, one zero descriptor             |
//	0x0_0000_6000 | PVH hvm_start_info                   |
//	0x0_0000_6040 | PVH modlist (the initrd)             |
//	0x0_0000_6100 | PVH memmap, at most 128 entries      |
//	0x0_0000_7000 | zero page (struct boot_params)       |
//	0x0_0000_8ff0 | boot stack top, grows down           |
//	0x0_0000_9000 | PML4                                 |
//	0x0_0000_a000 | PDPT                                 |
//	0x0_0000_b000 | 4 PDs: 2 MiB pages, identity 4 GiB   |
//	0x0_0000_f000 | (free)                               |
//	0x0_0002_0000 | kernel command line, 2 KiB           |
//	0x0_0009_fc00 +--------------------------------------+ reserved
//	              | EBDA: MP floating pointer + table    |
//	0x0_000a_0000 | VGA hole, option and BIOS ROMs (none)|
//	0x0_0010_0000 +--------------------------------------+ RAM
//	              | kernel PT_LOAD segments (vmlinux     |
//	              | links at 16 MiB)                     |
//	              | ...                                  |
//	              | initrd, page aligned, at the top     |
//	  low RAM end +--------------------------------------+ min(RAM, 0xd000_0000)
//	              | (nothing when RAM < 0xd000_0000)     |
//	0x0_d000_0000 +--------------------------------------+ MMIO gap (absent)
//	              | virtio-mmio slots, 4 KiB each,       |
//	              | IRQ 5, 6, ... 23                     |
//	0x0_fec0_0000 | IOAPIC                               |
//	0x0_fee0_0000 | LAPIC                                |
//	0x1_0000_0000 +--------------------------------------+ RAM
//	              | high RAM: RAM - 0xd000_0000 bytes,   |
//	              | only when RAM > 0xd000_0000          |
//	              +--------------------------------------+
const (
	// PageSize is the x86 base page size (Intel SDM vol. 3A §4.3); RAM
	// sizes, the initrd and the boot structures are aligned to it.
	PageSize = 0x1000

	// GDTAddr is where the boot GDT goes (Firecracker BOOT_GDT_OFFSET).
	GDTAddr = 0x500

	// IDTAddr is where the boot IDT goes: one zero descriptor, so any
	// exception before the kernel loads its own IDT is a triple fault
	// (Firecracker BOOT_IDT_OFFSET).
	IDTAddr = 0x520

	// PVHStartInfoAddr is where struct hvm_start_info goes; RBX points here
	// at the PVH entry (Firecracker PVH_INFO_START).
	PVHStartInfoAddr = 0x6000

	// PVHModlistAddr is where the hvm_modlist_entry array goes: one entry,
	// the initrd (Firecracker MODLIST_START).
	PVHModlistAddr = 0x6040

	// PVHMemmapAddr is where the hvm_memmap_table_entry array goes.
	// Firecracker uses 0x7000, shared with the zero page because a guest
	// uses only one of the two; this map keeps every structure disjoint.
	PVHMemmapAddr = 0x6100

	// PVHMemmapMaxEntries bounds the PVH memory map so that it ends before
	// ZeroPageAddr: 128 entries of 24 bytes end at 0x6d00.
	PVHMemmapMaxEntries = 128

	// ZeroPageAddr is where struct boot_params (the "zero page") goes; RSI
	// points here at the 64-bit entry (Firecracker ZERO_PAGE_START).
	ZeroPageAddr = 0x7000

	// BootStackPointer is the initial RSP and RBP for the 64-bit entry
	// (Firecracker BOOT_STACK_POINTER): 16-byte aligned, below the page
	// tables, above the zero page.
	BootStackPointer = 0x8ff0

	// PML4Addr is the top-level page table; CR3 holds it at the 64-bit entry
	// (Firecracker PML4_START).
	PML4Addr = 0x9000

	// PDPTAddr is the page-directory-pointer table (Firecracker PDPTE_START).
	PDPTAddr = 0xa000

	// PDAddr is the first of PDCount page directories (Firecracker
	// PDE_START). Firecracker maps 1 GiB with one PD; this map uses four to
	// cover the whole 32-bit space, so the kernel, the initrd and the
	// command line are mapped wherever they land in low RAM.
	PDAddr = 0xb000

	// PDCount is the number of page directories, each mapping 1 GiB with
	// 512 2 MiB pages (Intel SDM vol. 3A §4.5, table 4-17).
	PDCount = 4

	// IdentityMapBytes is the size of the identity map the boot page tables
	// establish, starting at guest physical 0.
	IdentityMapBytes = PDCount << 30

	// CmdlineAddr is where the NUL-terminated kernel command line goes
	// (Firecracker CMDLINE_START).
	CmdlineAddr = 0x20000

	// CmdlineMaxSize is the command line limit in bytes, including the
	// terminating NUL: Linux's COMMAND_LINE_SIZE for x86
	// (arch/x86/include/asm/setup.h) and Firecracker's CMDLINE_MAX_SIZE.
	CmdlineMaxSize = 2048

	// EBDAStart is the start of the Extended BIOS Data Area, the last KiB
	// below 640 KiB (Firecracker EBDA_START). RAM below it is usable; from
	// here to HighMemStart the e820 map says reserved.
	EBDAStart = 0x9fc00

	// MPTableAddr is where the MP floating pointer goes, followed by the MP
	// configuration table. Linux scans the last KiB below 640 KiB for it
	// (arch/x86/kernel/mpparse.c, smp_scan_config(639 * 0x400, 0x400)); the
	// Intel MP Spec 1.4 §4 allows the first KiB of the EBDA too. The table
	// itself may run on into the reserved area (Firecracker MPTABLE_START).
	MPTableAddr = EBDAStart

	// MPTableMaxSize is the room for the MP floating pointer and table: the
	// reserved area from EBDAStart to HighMemStart.
	MPTableMaxSize = HighMemStart - MPTableAddr

	// HighMemStart is the first byte above the legacy 1 MiB area; kernel
	// segments must load at or above it (Firecracker HIMEM_START).
	HighMemStart = 0x100000

	// MMIOGapStart is the start of the 32-bit MMIO gap: no RAM from here to
	// MMIOGapEnd. Firecracker starts its gap at 3 GiB (MMIO32_MEM_START);
	// this map starts it at 0xd000_0000 like tinyrange/cc, leaving 3.25 GiB
	// of low RAM.
	MMIOGapStart = 0xd000_0000

	// MMIOGapEnd is the end of the 32-bit MMIO gap, 4 GiB
	// (Firecracker FIRST_ADDR_PAST_32BITS).
	MMIOGapEnd = 1 << 32

	// HighRAMStart is where guest RAM beyond MMIOGapStart bytes continues.
	HighRAMStart = MMIOGapEnd

	// VirtioMMIOBase is the base of the first virtio-mmio device window;
	// windows are allocated upward, one per VirtioMMIOSlotSize.
	VirtioMMIOBase = MMIOGapStart

	// VirtioMMIOSlotSize is the size of one virtio-mmio register window
	// (virtio 1.2 §4.2.2 registers end below 0x100 plus config space;
	// Firecracker MMIO_LEN and Linux's "virtio_mmio.device=4K@..." use 4 KiB).
	VirtioMMIOSlotSize = 0x1000

	// VirtioMMIOEnd bounds the virtio-mmio windows: they stop at the IOAPIC.
	VirtioMMIOEnd = IOAPICAddr

	// VirtioIRQFirst is the first IOAPIC pin handed to virtio-mmio devices:
	// 0..4 are the PIT, i8042 keyboard, cascade, COM2 and COM1 (Firecracker
	// IRQ_BASE = 5).
	VirtioIRQFirst = 5

	// VirtioIRQLast is the last usable IOAPIC pin (Firecracker IRQ_MAX).
	VirtioIRQLast = IOAPICPins - 1

	// VirtioMaxDevices is the number of virtio-mmio devices the map can
	// declare: one IRQ each, so 19.
	VirtioMaxDevices = VirtioIRQLast - VirtioIRQFirst + 1

	// IOAPICAddr is the IOAPIC register window (Linux
	// IO_APIC_DEFAULT_PHYS_BASE, the address KVM's in-kernel IOAPIC uses).
	IOAPICAddr = 0xfec0_0000

	// IOAPICPins is the number of IOAPIC redirection entries KVM emulates
	// (KVM_IOAPIC_NUM_PINS in arch/x86/include/uapi/asm/kvm.h).
	IOAPICPins = 24

	// LAPICAddr is the local APIC register window (Linux
	// APIC_DEFAULT_PHYS_BASE; IA32_APIC_BASE reset value, SDM vol. 3A §11.4.4).
	LAPICAddr = 0xfee0_0000

	// MinRAMBytes is the smallest guest RAM accepted: the legacy 1 MiB plus
	// one MiB for a kernel.
	MinRAMBytes = 2 << 20

	// MaxRAMBytes is the largest guest RAM accepted: high RAM then ends
	// below 2^39, inside the 39-bit physical address width of the oldest
	// hosts KVM supports.
	MaxRAMBytes = 256 << 30
)

// Region is a range of guest physical addresses.
type Region struct {
	// Start is the first guest physical address of the range.
	Start uint64
	// Size is the length of the range in bytes.
	Size uint64
}

// End returns the first address past r.
func (r Region) End() uint64 { return r.Start + r.Size }

// Contains reports whether [addr, addr+size) lies inside r. A zero size is
// contained if addr lies in [r.Start, r.End()].
func (r Region) Contains(addr, size uint64) bool {
	return addr >= r.Start && addr <= r.End() && size <= r.End()-addr
}

// MemoryRegions splits ramBytes of guest RAM around the 32-bit MMIO gap: the
// first min(ramBytes, MMIOGapStart) bytes at address 0, the rest at
// HighRAMStart. The caller backs each region with host memory. ramBytes is
// not validated; see ValidateRAM.
func MemoryRegions(ramBytes uint64) []Region {
	if ramBytes == 0 {
		return nil
	}
	if ramBytes <= MMIOGapStart {
		return []Region{{Start: 0, Size: ramBytes}}
	}
	return []Region{
		{Start: 0, Size: MMIOGapStart},
		{Start: HighRAMStart, Size: ramBytes - MMIOGapStart},
	}
}

// LowRAMEnd returns the first address past the RAM below the MMIO gap.
func LowRAMEnd(ramBytes uint64) uint64 { return min(ramBytes, MMIOGapStart) }

// ValidateRAM checks a guest RAM size: a multiple of PageSize within
// [MinRAMBytes, MaxRAMBytes]. Errors wrap ErrInvalidConfig.
func ValidateRAM(ramBytes uint64) error {
	switch {
	case ramBytes < MinRAMBytes:
		return fmt.Errorf("%w: ram %d bytes is below the minimum %d", ErrInvalidConfig, ramBytes, uint64(MinRAMBytes))
	case ramBytes > MaxRAMBytes:
		return fmt.Errorf("%w: ram %d bytes is above the maximum %d", ErrInvalidConfig, ramBytes, uint64(MaxRAMBytes))
	case ramBytes%PageSize != 0:
		return fmt.Errorf("%w: ram %d bytes is not a multiple of the page size", ErrInvalidConfig, ramBytes)
	}
	return nil
}

// E820 memory types (arch/x86/include/asm/e820/types.h; the PVH memmap uses
// the same numbers, XEN_HVM_MEMMAP_TYPE_* in start_info.h).
const (
	// E820RAM marks usable RAM.
	E820RAM = 1
	// E820Reserved marks memory the guest must not use.
	E820Reserved = 2
)

// E820Entry is one entry of the guest memory map given to the kernel in the
// zero page (struct boot_e820_entry) or the PVH memmap.
type E820Entry struct {
	// Addr is the first guest physical address of the range.
	Addr uint64
	// Size is the length of the range in bytes.
	Size uint64
	// Type is E820RAM or E820Reserved.
	Type uint32
}

// E820Map returns the memory map the guest sees, in address order, for a
// RAM size that passed ValidateRAM:
//
//  1. [0, EBDAStart) RAM: low memory with the boot structures, which the
//     kernel reserves itself once booted.
//  2. [EBDAStart, HighMemStart) reserved: EBDA, MP table, legacy ROM area.
//  3. [HighMemStart, LowRAMEnd) RAM: kernel, initrd, free memory.
//  4. [HighRAMStart, ...) RAM, when RAM extends past the MMIO gap.
//
// The MMIO gap is absent from the map, as on PC firmware.
func E820Map(ramBytes uint64) []E820Entry {
	m := []E820Entry{
		{Addr: 0, Size: EBDAStart, Type: E820RAM},
		{Addr: EBDAStart, Size: HighMemStart - EBDAStart, Type: E820Reserved},
	}
	if low := LowRAMEnd(ramBytes); low > HighMemStart {
		m = append(m, E820Entry{Addr: HighMemStart, Size: low - HighMemStart, Type: E820RAM})
	}
	if ramBytes > MMIOGapStart {
		m = append(m, E820Entry{Addr: HighRAMStart, Size: ramBytes - MMIOGapStart, Type: E820RAM})
	}
	return m
}

// InitrdAddr returns where an initrd of size bytes goes: as high as possible
// in low RAM, page aligned, below the MMIO gap (Firecracker
// initrd_load_addr). kernelEnd is the first address past the kernel
// (Kernel.End); the initrd must not reach below it. Errors wrap
// ErrInvalidConfig.
func InitrdAddr(ramBytes, size, kernelEnd uint64) (uint64, error) {
	low := LowRAMEnd(ramBytes)
	floor := max(kernelEnd, HighMemStart)
	if floor <= low {
		floor = alignUp(floor, PageSize) // cannot wrap: low < 4 GiB
	}
	if size == 0 || size > low || low-size < floor {
		return 0, fmt.Errorf("%w: initrd of %d bytes does not fit in low ram [%#x, %#x)", ErrInvalidConfig, size, floor, low)
	}
	addr := alignDown(low-size, PageSize)
	if addr < floor {
		return 0, fmt.Errorf("%w: initrd of %d bytes does not fit in low ram [%#x, %#x)", ErrInvalidConfig, size, floor, low)
	}
	return addr, nil
}

// CmdlineBytes returns the kernel command line as the NUL-terminated bytes to
// copy to CmdlineAddr. It rejects a line with a NUL byte or longer than
// CmdlineMaxSize-1 bytes; errors wrap ErrInvalidConfig.
func CmdlineBytes(cmdline string) ([]byte, error) {
	if len(cmdline) >= CmdlineMaxSize {
		return nil, fmt.Errorf("%w: command line of %d bytes exceeds %d", ErrInvalidConfig, len(cmdline), CmdlineMaxSize-1)
	}
	if strings.IndexByte(cmdline, 0) >= 0 {
		return nil, fmt.Errorf("%w: command line contains a NUL byte", ErrInvalidConfig)
	}
	b := make([]byte, len(cmdline)+1)
	copy(b, cmdline)
	return b, nil
}

// VirtioMMIOSlot returns the register window base and IOAPIC pin of the i-th
// virtio-mmio device (0-based), as the device manager declares it with
// "virtio_mmio.device=4K@<base>:<irq>". Errors wrap ErrInvalidConfig.
func VirtioMMIOSlot(i int) (base uint64, irq uint32, err error) {
	if i < 0 || i >= VirtioMaxDevices {
		return 0, 0, fmt.Errorf("%w: virtio device index %d outside [0, %d)", ErrInvalidConfig, i, VirtioMaxDevices)
	}
	return VirtioMMIOBase + uint64(i)*VirtioMMIOSlotSize, VirtioIRQFirst + uint32(i), nil
}

// Blob is a run of bytes the caller copies into guest RAM at Addr.
type Blob struct {
	// Addr is the guest physical address of the first byte.
	Addr uint64
	// Data is the bytes to copy.
	Data []byte
}

func alignUp(v, a uint64) uint64   { return (v + a - 1) &^ (a - 1) }
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }
