// SPDX-License-Identifier: Apache-2.0

package amd64

// MSR indices (arch/x86/include/asm/msr-index.h; SDM vol. 4, table 2-2).
const (
	// MSRIA32TSC is IA32_TIME_STAMP_COUNTER.
	MSRIA32TSC = 0x10
	// MSRIA32SysenterCS is IA32_SYSENTER_CS, the SYSENTER target CS.
	MSRIA32SysenterCS = 0x174
	// MSRIA32SysenterESP is IA32_SYSENTER_ESP, the SYSENTER target ESP.
	MSRIA32SysenterESP = 0x175
	// MSRIA32SysenterEIP is IA32_SYSENTER_EIP, the SYSENTER target EIP.
	MSRIA32SysenterEIP = 0x176
	// MSRIA32MiscEnable is IA32_MISC_ENABLE.
	MSRIA32MiscEnable = 0x1a0
	// MSRMTRRDefType is IA32_MTRR_DEF_TYPE.
	MSRMTRRDefType = 0x2ff
	// MSRSTAR is IA32_STAR, the SYSCALL/SYSRET segment selectors.
	MSRSTAR = 0xc0000081
	// MSRLSTAR is IA32_LSTAR, the 64-bit SYSCALL target.
	MSRLSTAR = 0xc0000082
	// MSRCSTAR is IA32_CSTAR, the compatibility-mode SYSCALL target.
	MSRCSTAR = 0xc0000083
	// MSRSyscallMask is IA32_FMASK, the RFLAGS mask applied by SYSCALL.
	MSRSyscallMask = 0xc0000084
	// MSRKernelGSBase is IA32_KERNEL_GS_BASE, the value SWAPGS exchanges.
	MSRKernelGSBase = 0xc0000102
)

// MSR values (SDM vol. 4 table 2-2; SDM vol. 3A §12.11.2.1).
const (
	// MiscEnableFastStrings is IA32_MISC_ENABLE bit 0: fast string
	// operations (REP MOVS/STOS) enabled.
	MiscEnableFastStrings = 1 << 0
	// MTRRDefTypeEnable is IA32_MTRR_DEF_TYPE bit 11 (E): MTRRs enabled.
	MTRRDefTypeEnable = 1 << 11
	// MTRRTypeWriteBack is memory type 6, write-back (SDM vol. 3A table 12-8).
	MTRRTypeWriteBack = 6
)

// MSR is a model-specific register value to write with KVM_SET_MSRS
// (struct kvm_msr_entry).
type MSR struct {
	// Index is the MSR number.
	Index uint32
	// Value is the value to write.
	Value uint64
}

// BootMSRs returns the MSRs to write on every vCPU before it first runs, in
// the order Firecracker writes them (arch/x86_64/msr.rs,
// create_boot_msr_entries): the SYSENTER and SYSCALL MSRs, KERNEL_GS_BASE
// and the TSC zeroed; fast strings enabled; MTRRs enabled with write-back
// as the default memory type, so guest RAM is cacheable before the kernel
// programs the MTRRs.
func BootMSRs() []MSR {
	return []MSR{
		{Index: MSRIA32SysenterCS},
		{Index: MSRIA32SysenterESP},
		{Index: MSRIA32SysenterEIP},
		{Index: MSRSTAR},
		{Index: MSRCSTAR},
		{Index: MSRKernelGSBase},
		{Index: MSRSyscallMask},
		{Index: MSRLSTAR},
		{Index: MSRIA32TSC},
		{Index: MSRIA32MiscEnable, Value: MiscEnableFastStrings},
		{Index: MSRMTRRDefType, Value: MTRRDefTypeEnable | MTRRTypeWriteBack},
	}
}
