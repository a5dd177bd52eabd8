// SPDX-License-Identifier: Apache-2.0

package kvm

// ioctl request numbers, from include/uapi/linux/kvm.h. The encoding is the
// generic Linux one (include/uapi/asm-generic/ioctl.h): dir<<30 | size<<16 |
// type<<8 | nr, with type KVMIO = 0xAE.
const (
	kvmio = 0xAE

	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | kvmio<<8 | nr }

var (
	ioctlGetAPIVersion       = ioc(iocNone, 0x00, 0)
	ioctlCreateVM            = ioc(iocNone, 0x01, 0)
	ioctlCheckExtension      = ioc(iocNone, 0x03, 0)
	ioctlGetVCPUMmapSize     = ioc(iocNone, 0x04, 0)
	ioctlCreateVCPU          = ioc(iocNone, 0x41, 0)
	ioctlSetUserMemoryRegion = ioc(iocWrite, 0x46, sizeofUserMemoryRegion)
	ioctlSetTSSAddr          = ioc(iocNone, 0x47, 0)
	ioctlCreateIRQChip       = ioc(iocNone, 0x60, 0)
	ioctlRun                 = ioc(iocNone, 0x80, 0)
	ioctlGetRegs             = ioc(iocRead, 0x81, sizeofRegs)
	ioctlSetRegs             = ioc(iocWrite, 0x82, sizeofRegs)
	ioctlGetSregs            = ioc(iocRead, 0x83, sizeofSregs)
	ioctlSetSregs            = ioc(iocWrite, 0x84, sizeofSregs)
	ioctlGetSupportedCPUID   = ioc(iocRead|iocWrite, 0x05, sizeofCPUIDHeader)
	ioctlSetIdentityMapAddr  = ioc(iocWrite, 0x48, 8)
	ioctlIRQLine             = ioc(iocWrite, 0x61, 8)
	ioctlIRQFD               = ioc(iocWrite, 0x76, sizeofIRQFD)
	ioctlCreatePIT2          = ioc(iocWrite, 0x77, sizeofPITConfig)
	ioctlIOEventFD           = ioc(iocWrite, 0x79, sizeofIOEventFD)
	ioctlSetMSRs             = ioc(iocWrite, 0x89, sizeofMSRsHeader)
	ioctlSetFPU              = ioc(iocWrite, 0x8d, sizeofFPU)
	ioctlGetLAPIC            = ioc(iocRead, 0x8e, LAPICSize)
	ioctlSetLAPIC            = ioc(iocWrite, 0x8f, LAPICSize)
	ioctlGetMPState          = ioc(iocRead, 0x98, 4)
	ioctlSetCPUID2           = ioc(iocWrite, 0x90, sizeofCPUIDHeader)
)

// APIVersion is the only KVM API version there has ever been (KVM_API_VERSION).
const APIVersion = 12

// Cap is a KVM capability number for CheckExtension (KVM_CAP_* in kvm.h).
type Cap uintptr

// Capabilities the VMM relies on.
const (
	CapIRQChip          Cap = 0   // KVM_CAP_IRQCHIP
	CapUserMemory       Cap = 3   // KVM_CAP_USER_MEMORY
	CapSetTSSAddr       Cap = 4   // KVM_CAP_SET_TSS_ADDR
	CapIOEventFD        Cap = 36  // KVM_CAP_IOEVENTFD
	CapIRQFD            Cap = 32  // KVM_CAP_IRQFD
	CapPIT2             Cap = 33  // KVM_CAP_PIT2
	CapTSCDeadlineTimer Cap = 72  // KVM_CAP_TSC_DEADLINE_TIMER
	CapImmediateExit    Cap = 136 // KVM_CAP_IMMEDIATE_EXIT
)
