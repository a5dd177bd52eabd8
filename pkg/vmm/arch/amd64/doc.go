// SPDX-License-Identifier: Apache-2.0

// Package amd64 computes the x86-64 boot state of a microVM as plain data:
// the guest physical memory map, the kernel's loadable segments, the boot
// structures to copy into guest RAM (GDT, page tables, PVH start info, Linux
// zero page, e820 map, MP table, command line) and the initial register,
// CPUID and MSR values of each vCPU.
//
// The package issues no ioctls and touches no guest memory. Its callers (the
// KVM backend) copy each [Blob] into guest RAM and load the register values,
// so every function here is testable on any host.
//
// # Specifications
//
//   - Firecracker's x86_64 machine model (src/vmm/src/arch/x86_64: layout.rs,
//     regs.rs, gdt.rs, mptable.rs, msr.rs, cpuid/): addresses, segment flags,
//     boot MSRs and CPUID normalisation follow it unless a comment says
//     otherwise.
//   - Xen PVH boot ABI: xen/include/public/arch-x86/hvm/start_info.h,
//     xen/include/public/elfnote.h and docs/misc/pvh.pandoc; Linux's side is
//     arch/x86/platform/pvh/{head.S,enlighten.c}.
//   - Linux x86 boot protocol: Documentation/arch/x86/boot.rst ("64-bit boot
//     protocol") and Documentation/arch/x86/zero-page.rst, struct layouts from
//     arch/x86/include/uapi/asm/bootparam.h.
//   - Intel MultiProcessor Specification 1.4, chapter 4 (MP configuration
//     table), as parsed by Linux arch/x86/kernel/mpparse.c.
//   - Intel SDM vol. 2A (CPUID), vol. 3A (segment descriptors, paging, control
//     registers) and AMD APM vol. 3 (CPUID Fn8000_0008, Fn8000_001E).
//
// # Trust boundary
//
// The kernel image is user input: [ParseELF] distrusts every header, offset,
// size and note in it and reports problems as errors wrapping
// [ErrInvalidKernel] or [ErrKernelPlacement]; it never panics. Everything
// else is computed from validated configuration. No input comes from the
// guest: this package runs before the first instruction of the guest.
//
// # Concurrency
//
// The package starts no goroutines and keeps no state; every function is
// safe to call from any goroutine.
//
// # Testing
//
// go test ./pkg/vmm/arch/amd64/ runs table tests that read each structure back
// field by field and verify its checksums. FuzzParseELF fuzzes the kernel
// parser. If build/vmlinux exists (kernel/build.sh), TestParseVmlinux parses
// it and requires the PVH note.
package amd64
