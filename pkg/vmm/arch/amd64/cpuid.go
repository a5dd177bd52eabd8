// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"fmt"
	"math/bits"
)

// CPUIDEntry is one CPUID leaf as KVM_GET_SUPPORTED_CPUID returns and
// KVM_SET_CPUID2 takes it (struct kvm_cpuid_entry2, linux/kvm.h).
type CPUIDEntry struct {
	// Function is the leaf, the EAX input.
	Function uint32
	// Index is the subleaf, the ECX input; it matters only when Flags has
	// CPUIDFlagSignificantIndex.
	Index uint32
	// Flags holds KVM_CPUID_FLAG_* bits.
	Flags uint32
	// EAX, EBX, ECX and EDX are the outputs.
	EAX, EBX, ECX, EDX uint32
}

// CPUIDFlagSignificantIndex is KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic,
// linux/kvm.h): the entry applies only to subleaf Index.
const CPUIDFlagSignificantIndex = 1

// CPUID leaves and bits this package adjusts.
const (
	leafVendor      = 0x0
	leafFeatures    = 0x1
	leafCache       = 0x4        // Intel deterministic cache parameters
	leafTopology    = 0xb        // extended topology enumeration
	leafTopologyV2  = 0x1f       // V2 extended topology enumeration
	leafExtFeatures = 0x80000001 // AMD extended features
	leafAddrSizes   = 0x80000008 // AMD: core count in ECX
	leafAMDTopology = 0x8000001e // AMD extended APIC ID, core and node IDs

	// KVMCPUIDSignatureLeaf is the first KVM paravirtual leaf; EBX, ECX
	// and EDX spell "KVMKVMKVM\0\0\0" (Documentation/virt/kvm/x86/cpuid.rst).
	// AdjustCPUID leaves 0x4000_0000 and above as KVM reports them.
	KVMCPUIDSignatureLeaf = 0x40000000

	features1ECXHypervisor = 1 << 31 // CPUID.1:ECX, "running on a hypervisor" (SDM vol. 2A table 3-10 note)
	features1EDXHTT        = 1 << 28 // CPUID.1:EDX, EBX[23:16] is valid (SDM table 3-11)
	ext1ECXCmpLegacy       = 1 << 1  // CPUID.8000_0001:ECX CmpLegacy (AMD APM vol. 3 E.4.2)

	topoLevelInvalid = 0 // CPUID.B/1F:ECX[15:8] level types (SDM vol. 2A, leaf 0BH)
	topoLevelSMT     = 1
	topoLevelCore    = 2
)

// CPU vendors, by the CPUID.0 vendor string.
type vendor int

const (
	vendorOther vendor = iota
	vendorIntel
	vendorAMD // AMD and Hygon
)

// cpuVendor returns the vendor named by the leaf-0 entry of entries.
func cpuVendor(entries []CPUIDEntry) vendor {
	for _, e := range entries {
		if e.Function != leafVendor {
			continue
		}
		s := string(le32(e.EBX)) + string(le32(e.EDX)) + string(le32(e.ECX))
		switch s {
		case "GenuineIntel":
			return vendorIntel
		case "AuthenticAMD", "HygonGenuine":
			return vendorAMD
		}
	}
	return vendorOther
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

// AdjustCPUID returns the CPUID entries for vCPU cpu of count, derived from
// supported, the output of KVM_GET_SUPPORTED_CPUID. The topology it presents
// is one package of count single-threaded cores, APIC ID = cpu, matching
// MPTable. supported is not modified. Steps (after Firecracker's
// cpuid/normalize.rs, intel_normalize.rs, amd_normalize.rs):
//
//  1. leaf 1: initial APIC ID EBX[31:24] = cpu, logical processor count
//     EBX[23:16] = count, HTT set when count > 1, hypervisor bit ECX[31] set;
//  2. leaf 4, each cache: cores per package EAX[31:26] = count-1 (at most
//     63), sharing EAX[25:14] = 0 for L1/L2 (per core) and count-1 for L3;
//  3. leaves 0xB and 0x1F, when supported lists them, replaced by three
//     subleaves: SMT (1 thread), core (count processors, shift
//     ceil(log2 count)), invalid; EDX = x2APIC ID = cpu in each;
//  4. AMD and Hygon only: 0x8000_0001 CmpLegacy when count > 1 (as QEMU);
//     0x8000_0008 ECX NC = count-1 and ApicIdCoreIdSize = ceil(log2
//     count); 0x8000_001E extended APIC ID = cpu, core ID = cpu, one thread
//     per core, node 0 of 1;
//  5. every other leaf, the KVM leaves from KVMCPUIDSignatureLeaf on
//     included, as supported.
//
// Errors wrap ErrInvalidConfig when count is outside [1, MaxVCPUs] or cpu
// outside [0, count).
func AdjustCPUID(supported []CPUIDEntry, cpu, count int) ([]CPUIDEntry, error) {
	if count < 1 || count > MaxVCPUs {
		return nil, fmt.Errorf("%w: %d vcpus outside [1, %d]", ErrInvalidConfig, count, MaxVCPUs)
	}
	if cpu < 0 || cpu >= count {
		return nil, fmt.Errorf("%w: vcpu index %d outside [0, %d)", ErrInvalidConfig, cpu, count)
	}
	v := cpuVendor(supported)
	id, n := uint32(cpu), uint32(count)
	coreBits := uint32(bits.Len32(n - 1)) // ceil(log2 n)

	out := make([]CPUIDEntry, 0, len(supported)+4)
	seen := map[uint32]bool{} // topology leaves already emitted
	for _, e := range supported {
		switch e.Function {
		case leafFeatures:
			e.EBX = e.EBX&0x0000_ffff | n<<16 | id<<24
			e.ECX |= features1ECXHypervisor
			e.EDX &^= features1EDXHTT
			if n > 1 {
				e.EDX |= features1EDXHTT
			}
		case leafCache:
			if e.EAX&0x1f == 0 { // cache type 0: no more caches
				break
			}
			sharing := uint32(0)
			if level := e.EAX >> 5 & 0x7; level >= 3 {
				sharing = min(n-1, 0xfff)
			}
			e.EAX = e.EAX&0x0000_3fff | sharing<<14 | min(n-1, 63)<<26
		case leafTopology, leafTopologyV2:
			if !seen[e.Function] {
				seen[e.Function] = true
				out = append(out, topologyLeaf(e.Function, id, n, coreBits)...)
			}
			continue
		case leafExtFeatures:
			if v == vendorAMD {
				e.ECX &^= ext1ECXCmpLegacy
				if n > 1 {
					e.ECX |= ext1ECXCmpLegacy
				}
			}
		case leafAddrSizes:
			if v == vendorAMD {
				e.ECX = e.ECX&^0xf0ff | (n-1)&0xff | coreBits<<12
			}
		case leafAMDTopology:
			if v == vendorAMD {
				e.EAX = id
				e.EBX = e.EBX&^0xffff | id&0xff
				e.ECX &^= 0x7ff
				e.EDX = 0
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// topologyLeaf returns the subleaves of leaf 0xB or 0x1F for x2APIC ID id
// of n processors, one thread per core (SDM vol. 2A, CPUID leaf 0BH):
// EAX[4:0] the x2APIC ID shift to the next level, EBX[15:0] the logical
// processors at this level, ECX[7:0] the subleaf, ECX[15:8] the level type,
// EDX the x2APIC ID.
func topologyLeaf(fn, id, n, coreBits uint32) []CPUIDEntry {
	return []CPUIDEntry{
		{Function: fn, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 0, EBX: 1, ECX: 0 | topoLevelSMT<<8, EDX: id},
		{Function: fn, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: coreBits, EBX: n, ECX: 1 | topoLevelCore<<8, EDX: id},
		{Function: fn, Index: 2, Flags: CPUIDFlagSignificantIndex, EAX: 0, EBX: 0, ECX: 2 | topoLevelInvalid<<8, EDX: id},
	}
}
