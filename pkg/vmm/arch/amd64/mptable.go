// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"encoding/binary"
	"fmt"
)

// MP table layout (Intel MultiProcessor Specification 1.4, chapter 4; Linux
// arch/x86/include/asm/mpspec_def.h). All multi-byte fields little endian.
//
//	MPTableAddr      MP floating pointer structure (16 bytes, §4.1)
//	                 0  "_MP_"   4 u32 config table address   8 u8 length/16
//	                 9  u8 spec rev (4)   10 u8 checksum   11 u8 feature 1 (0:
//	                 table present)   12 u8 feature 2 (0: virtual wire)  13..15 0
//	MPTableAddr+16   configuration table header (44 bytes, §4.2)
//	                 0  "PCMP"   4 u16 base table length   6 u8 spec rev
//	                 7  u8 checksum   8 OEM id [8]   16 product id [12]
//	                 28 u32 OEM table   32 u16 OEM size   34 u16 entry count
//	                 36 u32 local APIC address   40 u16 ext length
//	                 42 u8 ext checksum   43 reserved
//	                 then the entries, in the order §4.3 requires:
//	                 processor x vCPUs (20 bytes each), bus (8), I/O APIC (8),
//	                 I/O interrupt x 24 (8), local interrupt x 2 (8)
const (
	// MaxVCPUs is the most vCPUs the MP table describes: APIC IDs are 8
	// bits, 0xff is the broadcast ID and the I/O APIC takes one more.
	MaxVCPUs = 254

	mpfSize            = 16
	mpcHeaderSize      = 44
	mpcProcessorSize   = 20
	mpcEntrySize       = 8
	mpSpecRev          = 4 // MP spec 1.4
	mpEntryProcessor   = 0
	mpEntryBus         = 1
	mpEntryIOAPIC      = 2
	mpEntryIOInterrupt = 3
	mpEntryLocalInt    = 4

	mpCPUEnabled  = 1 << 0 // processor entry CPU flags EN (§4.3.1)
	mpCPUBootProc = 1 << 1 // CPU flags BP: the bootstrap processor

	// mpCPUSignature is family 6, as Firecracker's mptable.rs
	// (CPU_STEPPING); Linux reads only the APIC ID and flags.
	mpCPUSignature = 0x600
	// mpCPUFeatures has FPU (bit 0) and APIC (bit 9) of CPUID.1:EDX.
	mpCPUFeatures = 1<<0 | 1<<9

	// LAPICVersion is the version KVM's in-kernel local APIC reports
	// (APIC_VERSION, arch/x86/kvm/lapic.c).
	LAPICVersion = 0x14
	// IOAPICVersion is the version KVM's in-kernel I/O APIC reports
	// (IOAPIC_VERSION_ID, arch/x86/kvm/ioapic.h).
	IOAPICVersion = 0x11

	mpIOAPICEnabled = 1 << 0 // I/O APIC entry flags EN (§4.3.3)

	mpIntINT    = 0 // vectored interrupt, from the I/O APIC (§4.3.4, table 4-9)
	mpIntNMI    = 1
	mpIntExtINT = 3

	mpAllLAPICs = 0xff // destination local APIC ID: all (§4.3.5)
)

// mpOEMID and mpProductID identify the table; the spec pads with spaces.
var (
	mpOEMID     = [8]byte{'M', 'S', 'B', 'G', 'O', ' ', ' ', ' '}
	mpProductID = [12]byte{'M', 'I', 'C', 'R', 'O', 'S', 'A', 'N', 'D', 'B', 'O', 'X'}
	mpBusISA    = [6]byte{'I', 'S', 'A', ' ', ' ', ' '}
)

// IOAPICID returns the APIC ID the MP table gives the I/O APIC for vcpus
// vCPUs: the first ID after the processors', which use 0..vcpus-1.
func IOAPICID(vcpus int) uint8 { return uint8(vcpus) }

// MPTable returns the MP floating pointer and configuration table for vcpus
// vCPUs, to copy to MPTableAddr. Linux without ACPI (CONFIG_X86_MPPARSE)
// finds the processors to start from it. The table has:
//
//  1. one processor entry per vCPU, APIC ID = vCPU index (as AdjustCPUID
//     reports), vCPU 0 flagged as the bootstrap processor;
//  2. bus 0, ISA;
//  3. the I/O APIC, ID IOAPICID(vcpus), at IOAPICAddr;
//  4. ISA IRQ i routed to I/O APIC pin i for every pin, polarity and
//     trigger as the bus defines (Firecracker mptable.rs);
//  5. ExtINT to LINT0 of the BSP and NMI to LINT1 of every local APIC.
//
// Both checksums make their bytes sum to zero. Errors wrap
// ErrInvalidConfig when vcpus is outside [1, MaxVCPUs].
func MPTable(vcpus int) (Blob, error) {
	if vcpus < 1 || vcpus > MaxVCPUs {
		return Blob{}, fmt.Errorf("%w: %d vcpus outside [1, %d]", ErrInvalidConfig, vcpus, MaxVCPUs)
	}
	le := binary.LittleEndian
	ioapic := IOAPICID(vcpus)

	// Entries first, so the header can hold their length and count.
	var e []byte
	for i := range vcpus {
		flags := byte(mpCPUEnabled)
		if i == 0 {
			flags |= mpCPUBootProc
		}
		e = append(e, mpEntryProcessor, byte(i), LAPICVersion, flags)
		e = le.AppendUint32(e, mpCPUSignature)
		e = le.AppendUint32(e, mpCPUFeatures)
		e = append(e, make([]byte, 8)...)
	}
	e = append(e, mpEntryBus, 0)
	e = append(e, mpBusISA[:]...)
	e = append(e, mpEntryIOAPIC, ioapic, IOAPICVersion, mpIOAPICEnabled)
	e = le.AppendUint32(e, IOAPICAddr)
	for pin := range byte(IOAPICPins) {
		e = append(e, mpEntryIOInterrupt, mpIntINT, 0, 0, 0, pin, ioapic, pin)
	}
	e = append(e, mpEntryLocalInt, mpIntExtINT, 0, 0, 0, 0, 0, 0)
	e = append(e, mpEntryLocalInt, mpIntNMI, 0, 0, 0, 0, mpAllLAPICs, 1)
	count := vcpus + 1 + 1 + IOAPICPins + 2

	hdr := make([]byte, mpcHeaderSize, mpcHeaderSize+len(e))
	copy(hdr[0:], "PCMP")
	le.PutUint16(hdr[4:], uint16(mpcHeaderSize+len(e)))
	hdr[6] = mpSpecRev
	copy(hdr[8:], mpOEMID[:])
	copy(hdr[16:], mpProductID[:])
	le.PutUint16(hdr[34:], uint16(count))
	le.PutUint32(hdr[36:], LAPICAddr)
	cfg := append(hdr, e...)
	cfg[7] = checksum(cfg)

	mpf := make([]byte, mpfSize)
	copy(mpf[0:], "_MP_")
	le.PutUint32(mpf[4:], MPTableAddr+mpfSize)
	mpf[8] = mpfSize / 16
	mpf[9] = mpSpecRev
	mpf[10] = checksum(mpf)

	out := append(mpf, cfg...)
	if len(out) > MPTableMaxSize {
		// Impossible: 254 vCPUs need about 5.4 KiB of the 384 KiB.
		panic(fmt.Sprintf("amd64: mp table of %d bytes exceeds %d", len(out), MPTableMaxSize))
	}
	return Blob{Addr: MPTableAddr, Data: out}, nil
}

// checksum returns the byte that makes the sum of b, with it added, zero
// modulo 256 (MP spec §4.1 and §4.2, CHECKSUM).
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}
