// SPDX-License-Identifier: Apache-2.0

package memory

import "unsafe"

// HostRegion is a region of guest RAM as KVM_SET_USER_MEMORY_REGION wants it
// (struct kvm_userspace_memory_region in linux/kvm.h).
type HostRegion struct {
	// GuestPhysAddr is the guest-physical base of the region.
	GuestPhysAddr uint64
	// Size is the length of the region in bytes.
	Size uint64
	// UserspaceAddr is the host virtual address of the region's first byte.
	UserspaceAddr uintptr
}

// HostRegions returns the regions of guest RAM with their host addresses,
// sorted by guest address, for registration with KVM. The addresses stay
// valid until [Memory.Close]; the caller must unregister them from KVM
// before closing.
func (m *Memory) HostRegions() []HostRegion {
	out := make([]HostRegion, 0, len(m.maps))
	for _, mp := range m.maps {
		// SAFETY: mp.Data is non-empty (checked at construction), so
		// &mp.Data[0] is a valid pointer to the first byte of the backing.
		// Converting it to uintptr only records the address; nothing here
		// converts it back. The backing is either an mmap region, which the
		// Go runtime never moves, or a caller-provided slice that m keeps
		// reachable. Only mmap-backed memory from New should be handed to
		// KVM: a Go slice could in principle live on a goroutine stack,
		// which moves, and the garbage collector does not know KVM holds it.
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(mp.Data)))
		out = append(out, HostRegion{
			GuestPhysAddr: uint64(mp.Base),
			Size:          uint64(len(mp.Data)),
			UserspaceAddr: addr,
		})
	}
	return out
}
