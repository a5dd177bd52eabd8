// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"encoding/binary"
	"fmt"
)

// PVH start info layout (xen/include/public/arch-x86/hvm/start_info.h). All
// fields are little endian; addresses are guest physical.
//
//	struct hvm_start_info (version 1, 56 bytes)
//	0x00  u32 magic           XEN_HVM_START_MAGIC_VALUE
//	0x04  u32 version         1: the memmap fields are valid
//	0x08  u32 flags           SIF_* flags, 0 here
//	0x0c  u32 nr_modules      entries at modlist_paddr
//	0x10  u64 modlist_paddr
//	0x18  u64 cmdline_paddr   NUL-terminated command line, 0 if none
//	0x20  u64 rsdp_paddr      ACPI RSDP, 0: none (no ACPI here)
//	0x28  u64 memmap_paddr
//	0x30  u32 memmap_entries
//	0x34  u32 reserved
//
//	struct hvm_modlist_entry (32 bytes)     struct hvm_memmap_table_entry (24 bytes)
//	0x00  u64 paddr                         0x00  u64 addr
//	0x08  u64 size                          0x08  u64 size
//	0x10  u64 cmdline_paddr                 0x10  u32 type (E820 numbering)
//	0x18  u64 reserved                      0x14  u32 reserved
const (
	// PVHMagic is XEN_HVM_START_MAGIC_VALUE; Linux's PVH entry checks it
	// (arch/x86/platform/pvh/enlighten.c, xen_prepare_pvh).
	PVHMagic = 0x336ec578
	// pvhVersion 1 adds memmap_paddr and memmap_entries to version 0.
	pvhVersion = 1

	pvhStartInfoSize    = 0x38
	pvhModlistEntrySize = 0x20
	pvhMemmapEntrySize  = 0x18

	pvhOffMagic         = 0x00
	pvhOffVersion       = 0x04
	pvhOffFlags         = 0x08
	pvhOffNrModules     = 0x0c
	pvhOffModlistPaddr  = 0x10
	pvhOffCmdlinePaddr  = 0x18
	pvhOffRSDPPaddr     = 0x20
	pvhOffMemmapPaddr   = 0x28
	pvhOffMemmapEntries = 0x30
)

// pvhStartInfo returns the blobs Linux's PVH entry reads, at their layout
// addresses:
//
//  1. the memory map at PVHMemmapAddr, from memmap;
//  2. when initrd.Size > 0, one module at PVHModlistAddr describing it;
//     Linux takes module 0 as the initrd (enlighten.c, init_pvh_bootparams);
//  3. hvm_start_info at PVHStartInfoAddr pointing at both and at the
//     command line at CmdlineAddr.
func pvhStartInfo(memmap []E820Entry, initrd Region) ([]Blob, error) {
	if len(memmap) > PVHMemmapMaxEntries {
		return nil, fmt.Errorf("%w: %d memory map entries exceed %d", ErrInvalidConfig, len(memmap), PVHMemmapMaxEntries)
	}
	le := binary.LittleEndian
	mm := make([]byte, 0, len(memmap)*pvhMemmapEntrySize)
	for _, e := range memmap {
		mm = le.AppendUint64(mm, e.Addr)
		mm = le.AppendUint64(mm, e.Size)
		mm = le.AppendUint32(mm, e.Type)
		mm = le.AppendUint32(mm, 0)
	}
	blobs := []Blob{{Addr: PVHMemmapAddr, Data: mm}}

	si := make([]byte, pvhStartInfoSize)
	le.PutUint32(si[pvhOffMagic:], PVHMagic)
	le.PutUint32(si[pvhOffVersion:], pvhVersion)
	le.PutUint32(si[pvhOffFlags:], 0)
	le.PutUint64(si[pvhOffCmdlinePaddr:], CmdlineAddr)
	le.PutUint64(si[pvhOffRSDPPaddr:], 0)
	le.PutUint64(si[pvhOffMemmapPaddr:], PVHMemmapAddr)
	le.PutUint32(si[pvhOffMemmapEntries:], uint32(len(memmap)))
	if initrd.Size > 0 {
		mod := make([]byte, pvhModlistEntrySize)
		le.PutUint64(mod[0x00:], initrd.Start)
		le.PutUint64(mod[0x08:], initrd.Size)
		blobs = append(blobs, Blob{Addr: PVHModlistAddr, Data: mod})
		le.PutUint32(si[pvhOffNrModules:], 1)
		le.PutUint64(si[pvhOffModlistPaddr:], PVHModlistAddr)
	}
	return append(blobs, Blob{Addr: PVHStartInfoAddr, Data: si}), nil
}
