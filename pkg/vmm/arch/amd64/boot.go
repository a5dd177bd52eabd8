// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"fmt"
	"slices"
)

// Protocol is a way to enter the kernel.
type Protocol int

const (
	// ProtocolPVH enters at the Xen PVH entry point in 32-bit protected
	// mode with RBX pointing at hvm_start_info.
	ProtocolPVH Protocol = iota + 1
	// ProtocolLinux64 enters at the ELF entry point in long mode with RSI
	// pointing at the zero page (boot.rst, "64-bit Boot Protocol").
	ProtocolLinux64
)

// String returns "pvh" or "linux64".
func (p Protocol) String() string {
	switch p {
	case ProtocolPVH:
		return "pvh"
	case ProtocolLinux64:
		return "linux64"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// BootConfig describes the guest to boot.
type BootConfig struct {
	// RAMBytes is the guest RAM size; it must pass ValidateRAM.
	RAMBytes uint64
	// VCPUs is the number of vCPUs, 1 to MaxVCPUs.
	VCPUs int
	// Cmdline is the kernel command line without the NUL; empty is valid.
	Cmdline string
	// InitrdSize is the initrd size in bytes; zero means no initrd.
	InitrdSize uint64
}

// Boot is the boot state of a guest, as data. The caller sets the guest up
// in this order:
//
//  1. copy each segment of Kernel.Segments to its PhysAddr and zero-fill it
//     to MemSize;
//  2. copy each Blob to its Addr;
//  3. copy the initrd to Initrd.Start, when Initrd.Size is non-zero;
//  4. on every vCPU i of n: KVM_SET_CPUID2 with AdjustCPUID(supported, i,
//     n), KVM_SET_MSRS with BootMSRs, KVM_SET_FPU with FPU;
//  5. on vCPU 0 only: KVM_SET_SREGS with SRegs over the values
//     KVM_GET_SREGS returned, then KVM_SET_REGS with Regs. The other vCPUs
//     wait for the INIT/SIPI the kernel sends through the in-kernel LAPIC.
type Boot struct {
	// Protocol is the entry protocol the state is for.
	Protocol Protocol
	// Blobs are the boot structures, disjoint, in address order, all below
	// HighMemStart.
	Blobs []Blob
	// Initrd is where the initrd goes; Size is zero without one.
	Initrd Region
	// Regs are the general registers of vCPU 0.
	Regs Regs
	// SRegs are the special registers of vCPU 0.
	SRegs SRegs
	// FPU is the FPU state of every vCPU.
	FPU FPU
}

// Plan returns the boot state for k: PVH when k has the PVH note, the Linux
// 64-bit boot protocol otherwise.
func Plan(k *Kernel, cfg BootConfig) (*Boot, error) {
	if k.HasPVH {
		return BootPVH(k, cfg)
	}
	return BootLinux64(k, cfg)
}

// BootPVH returns the boot state for entering k at its PVH entry point. The
// blobs are the GDT, IDT, command line, MP table and the PVH start info,
// module list and memory map. Errors wrap ErrNoPVHNote, ErrInvalidConfig or
// ErrKernelPlacement.
func BootPVH(k *Kernel, cfg BootConfig) (*Boot, error) {
	entry, err := k.PVH()
	if err != nil {
		return nil, err
	}
	b, err := common(k, cfg, gdt32)
	if err != nil {
		return nil, err
	}
	si, err := pvhStartInfo(E820Map(cfg.RAMBytes), b.Initrd)
	if err != nil {
		return nil, err
	}
	b.Protocol = ProtocolPVH
	b.Blobs = append(b.Blobs, si...)
	b.Regs, b.SRegs = pvhRegs(entry)
	return b.finish()
}

// BootLinux64 returns the boot state for entering k at its ELF entry point
// with the Linux 64-bit boot protocol. The blobs are the GDT, IDT, command
// line, MP table, page tables and zero page. Errors wrap ErrInvalidConfig or
// ErrKernelPlacement.
func BootLinux64(k *Kernel, cfg BootConfig) (*Boot, error) {
	b, err := common(k, cfg, gdt64)
	if err != nil {
		return nil, err
	}
	zp, err := zeroPage(E820Map(cfg.RAMBytes), len(cfg.Cmdline), b.Initrd)
	if err != nil {
		return nil, err
	}
	b.Protocol = ProtocolLinux64
	b.Blobs = append(b.Blobs, pageTables(), Blob{Addr: ZeroPageAddr, Data: zp})
	b.Regs, b.SRegs = linux64Regs(k.Entry64)
	return b.finish()
}

// common validates cfg against k and returns the state both protocols
// share:
//
//  1. RAM size, vCPU count and command line checked;
//  2. the kernel checked to end inside low RAM (it may have been parsed
//     for a different RAM size);
//  3. the initrd placed at the top of low RAM, above the kernel;
//  4. the GDT g, the IDT, the command line and the MP table as blobs.
func common(k *Kernel, cfg BootConfig, g gdt) (*Boot, error) {
	if err := ValidateRAM(cfg.RAMBytes); err != nil {
		return nil, err
	}
	mp, err := MPTable(cfg.VCPUs)
	if err != nil {
		return nil, err
	}
	cmd, err := CmdlineBytes(cfg.Cmdline)
	if err != nil {
		return nil, err
	}
	if len(k.Segments) == 0 {
		return nil, fmt.Errorf("%w: kernel has no segments", ErrInvalidKernel)
	}
	if low := LowRAMEnd(cfg.RAMBytes); k.End > low || k.Segments[0].PhysAddr < HighMemStart {
		return nil, fmt.Errorf("%w: kernel [%#x, %#x) outside low ram [%#x, %#x)", ErrKernelPlacement,
			k.Segments[0].PhysAddr, k.End, HighMemStart, low)
	}
	b := &Boot{FPU: defaultFPU}
	if cfg.InitrdSize > 0 {
		addr, err := InitrdAddr(cfg.RAMBytes, cfg.InitrdSize, k.End)
		if err != nil {
			return nil, err
		}
		b.Initrd = Region{Start: addr, Size: cfg.InitrdSize}
	}
	b.Blobs = []Blob{
		{Addr: GDTAddr, Data: g.bytes()},
		{Addr: IDTAddr, Data: idtBytes()},
		{Addr: CmdlineAddr, Data: cmd},
		mp,
	}
	return b, nil
}

// finish sorts the blobs by address and checks that they are disjoint and
// below HighMemStart. A failure is a bug in the layout constants, not a
// configuration problem, so it panics.
func (b *Boot) finish() (*Boot, error) {
	slices.SortFunc(b.Blobs, func(x, y Blob) int {
		switch {
		case x.Addr < y.Addr:
			return -1
		case x.Addr > y.Addr:
			return 1
		}
		return 0
	})
	for i, bl := range b.Blobs {
		end := bl.Addr + uint64(len(bl.Data))
		if end > HighMemStart || i+1 < len(b.Blobs) && end > b.Blobs[i+1].Addr {
			panic(fmt.Sprintf("amd64: boot blob [%#x, %#x) overlaps the next or leaves low memory", bl.Addr, end))
		}
	}
	return b, nil
}
