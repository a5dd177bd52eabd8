// SPDX-License-Identifier: Apache-2.0

package amd64

import "encoding/binary"

// Page table entry bits (SDM vol. 3A §4.5, tables 4-14, 4-16, 4-18).
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // in a PD entry: maps a 2 MiB page
)

// pageTables returns the boot page tables as one blob at PML4Addr: the PML4,
// the PDPT and PDCount PDs, contiguous, identity-mapping the first
// IdentityMapBytes with 2 MiB pages (Firecracker regs.rs setup_page_tables,
// extended from 1 to PDCount GiB):
//
//	PML4[0]      -> PDPT
//	PDPT[i]      -> PD i,            i < PDCount
//	PD i [j]     =  (i*512 + j) * 2 MiB | P | RW | PS
func pageTables() Blob {
	const pages = 2 + PDCount
	b := make([]byte, pages*PageSize)
	binary.LittleEndian.PutUint64(b[0:], PDPTAddr|ptePresent|pteWritable)
	for i := range uint64(PDCount) {
		pd := PDAddr + i*PageSize
		binary.LittleEndian.PutUint64(b[PageSize+8*i:], pd|ptePresent|pteWritable)
		for j := range uint64(512) {
			addr := (i*512 + j) << 21
			binary.LittleEndian.PutUint64(b[pd-PML4Addr+8*j:], addr|ptePresent|pteWritable|ptePageSize)
		}
	}
	return Blob{Addr: PML4Addr, Data: b}
}
