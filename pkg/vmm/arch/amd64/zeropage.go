// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"encoding/binary"
	"fmt"
)

// Zero page (struct boot_params) layout: offsets from
// Documentation/arch/x86/zero-page.rst and, for the setup header, the
// "offset/size" column of Documentation/arch/x86/boot.rst, which counts from
// the start of the zero page.
//
//	0x000 +-----------------------------+
//	      | screen_info, apm, ist, ...  |  zero
//	0x1e8 | u8 e820_entries             |
//	0x1f1 | struct setup_header ("hdr") |  fields below
//	0x2d0 | e820_table[128], 20 bytes   |  struct boot_e820_entry
//	      |   each: u64 addr, u64 size, |
//	      |   u32 type (packed)         |
//	0xcd0 | edd buffers, ...            |  zero
//	0x1000+-----------------------------+
const (
	zeroPageSize = 0x1000

	zpOffE820Entries = 0x1e8
	zpOffE820Table   = 0x2d0
	zpE820EntrySize  = 20
	// ZeroPageMaxE820 is E820_MAX_ENTRIES_ZEROPAGE
	// (arch/x86/include/uapi/asm/bootparam.h).
	ZeroPageMaxE820 = 128

	hdrOffBootFlag        = 0x1fe // u16
	hdrOffHeader          = 0x202 // u32
	hdrOffTypeOfLoader    = 0x210 // u8
	hdrOffLoadflags       = 0x211 // u8
	hdrOffRamdiskImage    = 0x218 // u32
	hdrOffRamdiskSize     = 0x21c // u32
	hdrOffCmdLinePtr      = 0x228 // u32
	hdrOffKernelAlignment = 0x230 // u32
	hdrOffCmdlineSize     = 0x238 // u32

	// bootFlagMagic is the boot_flag value, 0xAA55 (boot.rst).
	bootFlagMagic = 0xaa55
	// hdrMagic is "HdrS" read as a little-endian u32 (boot.rst, header).
	hdrMagic = 0x53726448
	// loaderUndefined is type_of_loader 0xFF: "undefined" boot loader
	// (boot.rst, type_of_loader; Firecracker KERNEL_LOADER_OTHER).
	loaderUndefined = 0xff
	// loadflagsLoadedHigh is LOADED_HIGH, bit 0 of loadflags: the
	// protected-mode code is loaded at 0x100000 or above (boot.rst).
	loadflagsLoadedHigh = 1 << 0
	// kernelAlignment is the alignment reported for a vmlinux, which has no
	// setup header of its own: 16 MiB, CONFIG_PHYSICAL_ALIGN's default
	// (Firecracker KERNEL_MIN_ALIGNMENT_BYTES).
	kernelAlignment = 0x100_0000
)

// zeroPage returns struct boot_params for the Linux 64-bit boot protocol. A
// vmlinux has no real-mode setup header, so the loader writes the fields the
// kernel reads (Firecracker configure_64bit_boot):
//
//  1. header "HdrS", boot_flag 0xAA55, type_of_loader 0xFF,
//     loadflags LOADED_HIGH, kernel_alignment 16 MiB;
//  2. cmd_line_ptr CmdlineAddr and cmdline_size cmdlineLen (without the
//     NUL);
//  3. ramdisk_image and ramdisk_size from initrd, when its size is
//     non-zero; both are 32-bit, so the initrd must end below 4 GiB;
//  4. the e820 table and its entry count.
func zeroPage(memmap []E820Entry, cmdlineLen int, initrd Region) ([]byte, error) {
	if len(memmap) > ZeroPageMaxE820 {
		return nil, fmt.Errorf("%w: %d memory map entries exceed %d", ErrInvalidConfig, len(memmap), ZeroPageMaxE820)
	}
	if initrd.Size > 0 && initrd.End() > 1<<32 {
		return nil, fmt.Errorf("%w: initrd [%#x, %#x) must end below 4 GiB", ErrInvalidConfig, initrd.Start, initrd.End())
	}
	le := binary.LittleEndian
	b := make([]byte, zeroPageSize)
	le.PutUint16(b[hdrOffBootFlag:], bootFlagMagic)
	le.PutUint32(b[hdrOffHeader:], hdrMagic)
	b[hdrOffTypeOfLoader] = loaderUndefined
	b[hdrOffLoadflags] = loadflagsLoadedHigh
	le.PutUint32(b[hdrOffKernelAlignment:], kernelAlignment)
	le.PutUint32(b[hdrOffCmdLinePtr:], CmdlineAddr)
	le.PutUint32(b[hdrOffCmdlineSize:], uint32(cmdlineLen))
	if initrd.Size > 0 {
		le.PutUint32(b[hdrOffRamdiskImage:], uint32(initrd.Start))
		le.PutUint32(b[hdrOffRamdiskSize:], uint32(initrd.Size))
	}
	b[zpOffE820Entries] = uint8(len(memmap))
	for i, e := range memmap {
		o := zpOffE820Table + i*zpE820EntrySize
		le.PutUint64(b[o:], e.Addr)
		le.PutUint64(b[o+8:], e.Size)
		le.PutUint32(b[o+16:], e.Type)
	}
	return b, nil
}
