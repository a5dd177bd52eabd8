// SPDX-License-Identifier: Apache-2.0

package amd64

// Control register and EFER bits (SDM vol. 3A §2.5, §2.2.1).
const (
	// CR0PE enables protected mode.
	CR0PE = 1 << 0
	// CR0ET is the extension type bit, fixed to 1 on every CPU KVM runs on.
	CR0ET = 1 << 4
	// CR0PG enables paging.
	CR0PG = 1 << 31
	// CR4PAE enables physical address extension, required for long mode.
	CR4PAE = 1 << 5
	// EFERLME enables long mode.
	EFERLME = 1 << 8
	// EFERLMA reports long mode active; KVM wants it set along with LME
	// when sregs put the vCPU directly into long mode.
	EFERLMA = 1 << 10
	// RFLAGSReserved is bit 1 of RFLAGS, which always reads as 1; the value
	// at both entries, so interrupts are off (SDM vol. 1 §3.4.3).
	RFLAGSReserved = 1 << 1
)

// FPU reset values Firecracker loads with KVM_SET_FPU (regs.rs setup_fpu).
const (
	// FPUControlWord is the x87 control word after FNINIT: all exceptions
	// masked, 64-bit precision, round to nearest (SDM vol. 1 §8.1.5).
	FPUControlWord = 0x37f
	// MXCSRDefault is the MXCSR reset value: all SIMD exceptions masked
	// (SDM vol. 1 §10.2.3).
	MXCSRDefault = 0x1f80
)

// Regs holds the general purpose registers at entry, as in struct kvm_regs
// (arch/x86/include/uapi/asm/kvm.h).
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	// RIP is the entry point.
	RIP uint64
	// RFLAGS is RFLAGSReserved at entry.
	RFLAGS uint64
}

// DescriptorTable is a GDTR or IDTR value (struct kvm_dtable).
type DescriptorTable struct {
	// Base is the guest physical (paging off) or linear address.
	Base uint64
	// Limit is the size of the table in bytes minus one.
	Limit uint16
}

// SRegs holds the special registers at entry, as in struct kvm_sregs. The
// caller reads the vCPU's sregs with KVM_GET_SREGS, overwrites these fields
// and writes them back; fields not listed here (LDT, CR2, CR8, APIC base,
// interrupt bitmap) keep their reset values.
type SRegs struct {
	// CS is the code segment.
	CS Segment
	// DS, ES, FS, GS and SS all hold the flat data segment.
	DS, ES, FS, GS, SS Segment
	// TR is the task register.
	TR Segment
	// GDT points at the boot GDT at GDTAddr.
	GDT DescriptorTable
	// IDT points at the boot IDT at IDTAddr.
	IDT DescriptorTable
	// CR0, CR3, CR4 and EFER are complete values, not bits to add.
	CR0, CR3, CR4, EFER uint64
}

// FPU holds the floating point state fields to set with KVM_SET_FPU; the
// rest of struct kvm_fpu stays zero.
type FPU struct {
	// FCW is the x87 control word.
	FCW uint16
	// MXCSR is the SSE control and status register.
	MXCSR uint32
}

// defaultFPU is the FPU state at both entries.
var defaultFPU = FPU{FCW: FPUControlWord, MXCSR: MXCSRDefault}

// sregsFor returns the special registers that load the code, data and TSS
// segments of g and point GDTR and IDTR at the boot tables.
func sregsFor(g gdt) SRegs {
	code, data, tss := g.segments()
	return SRegs{
		CS: code, DS: data, ES: data, FS: data, GS: data, SS: data, TR: tss,
		GDT: g.table(), IDT: idtTable,
	}
}

// pvhRegs returns the register state at the PVH entry. The PVH ABI
// (docs/misc/pvh.pandoc, "Initial state") asks for:
//
//  1. 32-bit protected mode, paging off: CR0 with PE (ET is fixed), CR4 0,
//     EFER 0;
//  2. CS a flat 32-bit execute/read segment, DS/ES/SS flat read/write
//     segments (FS and GS get the same), TR a 32-bit TSS of limit 0x67;
//  3. EBX the physical address of struct hvm_start_info;
//  4. EFLAGS with IF, TF and VM clear;
//  5. EIP the XEN_ELFNOTE_PHYS32_ENTRY address.
func pvhRegs(entry uint32) (Regs, SRegs) {
	s := sregsFor(gdt32)
	s.CR0 = CR0PE | CR0ET
	return Regs{RIP: uint64(entry), RBX: PVHStartInfoAddr, RFLAGS: RFLAGSReserved}, s
}

// linux64Regs returns the register state at the Linux 64-bit entry
// (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol"):
//
//  1. long mode with paging on: CR0 PE|PG, CR4 PAE, EFER LME|LMA, CR3 the
//     identity-mapping page tables at PML4Addr;
//  2. CS a flat 64-bit code segment, data segment registers flat with
//     __BOOT_DS semantics, TR a 64-bit TSS (Firecracker regs.rs);
//  3. RSI the zero page, interrupts off;
//  4. RSP and RBP the boot stack (Firecracker; the protocol asks for none);
//  5. RIP the ELF entry (startup_64).
func linux64Regs(entry uint64) (Regs, SRegs) {
	s := sregsFor(gdt64)
	s.CR0 = CR0PE | CR0ET | CR0PG
	s.CR3 = PML4Addr
	s.CR4 = CR4PAE
	s.EFER = EFERLME | EFERLMA
	return Regs{
		RIP:    entry,
		RSI:    ZeroPageAddr,
		RSP:    BootStackPointer,
		RBP:    BootStackPointer,
		RFLAGS: RFLAGSReserved,
	}, s
}
