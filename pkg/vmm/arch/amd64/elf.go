// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Limits on a kernel image. They reject absurd headers before any large
// allocation or read.
const (
	// MaxKernelSegments bounds the PT_LOAD segments of a kernel; a vmlinux
	// has about five (text, data, percpu, init, bss/notes).
	MaxKernelSegments = 64

	// maxNoteBytes bounds one PT_NOTE segment; vmlinux notes take a few
	// hundred bytes.
	maxNoteBytes = 1 << 20

	// xenNoteName is the owner name of Xen ELF notes, NUL included
	// (xen/include/public/elfnote.h; Linux ELFNOTE(Xen, ...)).
	xenNoteName = "Xen\x00"

	// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the note whose
	// descriptor is the 32-bit physical address of the PVH entry point
	// (xen/include/public/elfnote.h).
	xenElfnotePhys32Entry = 18
)

// Kernel is a parsed uncompressed kernel image (vmlinux): what to copy into
// guest RAM and where to enter it.
type Kernel struct {
	// Segments are the PT_LOAD segments with a non-zero memory size, in
	// ascending, non-overlapping guest physical address order, all inside
	// [HighMemStart, LowRAMEnd).
	Segments []LoadSegment

	// Entry64 is the entry point for the Linux 64-bit boot protocol: the ELF
	// e_entry, which a vmlinux links as a physical address
	// (arch/x86/kernel/vmlinux.lds.S: ENTRY(phys_startup_64)). It lies
	// inside a segment.
	Entry64 uint64

	// PVHEntry is the 32-bit PVH entry point from the Xen
	// XEN_ELFNOTE_PHYS32_ENTRY note; valid only when HasPVH is set. It lies
	// inside a segment.
	PVHEntry uint32

	// HasPVH reports whether the image carries the PVH entry note
	// (CONFIG_PVH=y).
	HasPVH bool

	// End is the first guest physical address past the highest segment.
	End uint64
}

// LoadSegment is one PT_LOAD segment: FileSize bytes from Data copied to
// PhysAddr, then MemSize-FileSize zero bytes (the bss).
type LoadSegment struct {
	// PhysAddr is the guest physical load address, the ELF p_paddr.
	PhysAddr uint64
	// FileSize is the number of bytes to copy from Data (p_filesz).
	FileSize uint64
	// MemSize is the size in guest memory (p_memsz), at least FileSize;
	// bytes past FileSize must be zero.
	MemSize uint64
	// Data reads the FileSize file bytes of the segment.
	Data *io.SectionReader
}

// PVH returns the PVH entry point, or an error wrapping ErrNoPVHNote when
// the kernel lacks the note.
func (k *Kernel) PVH() (uint32, error) {
	if !k.HasPVH {
		return 0, ErrNoPVHNote
	}
	return k.PVHEntry, nil
}

// ParseELF parses an uncompressed x86-64 kernel (vmlinux) of size bytes read
// from r, for a guest with ramBytes of RAM. The image is user input; ParseELF
// checks, in order:
//
//  1. the ELF header: 64-bit, little endian, EM_X86_64, ET_EXEC;
//  2. each PT_LOAD segment: file range inside the image, p_filesz <=
//     p_memsz, no address overflow, at most MaxKernelSegments;
//  3. placement: every segment inside [HighMemStart, LowRAMEnd(ramBytes)),
//     so never in the reserved low megabyte, the MMIO gap or past RAM, and
//     no two segments overlapping;
//  4. each PT_NOTE segment: bounded size, every note header, name and
//     descriptor inside the segment; the Xen PHYS32_ENTRY descriptor 4 or 8
//     bytes holding an address below 4 GiB;
//  5. both entry points inside a loaded segment.
//
// Format errors wrap ErrInvalidKernel, placement errors ErrKernelPlacement.
// A missing PVH note is not an error here: Kernel.HasPVH is false and
// Kernel.PVH reports ErrNoPVHNote. The returned segments read from r, which
// must stay valid while they are used.
func ParseELF(r io.ReaderAt, size int64, ramBytes uint64) (*Kernel, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: negative image size %d", ErrInvalidKernel, size)
	}
	img := io.NewSectionReader(r, 0, size)
	f, err := elf.NewFile(img)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKernel, err)
	}
	// 1. Header.
	switch {
	case f.Class != elf.ELFCLASS64:
		return nil, fmt.Errorf("%w: class %v, want ELFCLASS64", ErrInvalidKernel, f.Class)
	case f.Data != elf.ELFDATA2LSB:
		return nil, fmt.Errorf("%w: data encoding %v, want ELFDATA2LSB", ErrInvalidKernel, f.Data)
	case f.Machine != elf.EM_X86_64:
		return nil, fmt.Errorf("%w: machine %v, want EM_X86_64", ErrInvalidKernel, f.Machine)
	case f.Type != elf.ET_EXEC:
		return nil, fmt.Errorf("%w: type %v, want ET_EXEC", ErrInvalidKernel, f.Type)
	}

	k := &Kernel{Entry64: f.Entry}
	lowEnd := LowRAMEnd(ramBytes)
	for i, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			// 2. Segment bounds.
			if p.Memsz == 0 {
				continue
			}
			if len(k.Segments) == MaxKernelSegments {
				return nil, fmt.Errorf("%w: more than %d loadable segments", ErrInvalidKernel, MaxKernelSegments)
			}
			if err := checkFileRange(i, p, size); err != nil {
				return nil, err
			}
			if p.Filesz > p.Memsz {
				return nil, fmt.Errorf("%w: segment %d: p_filesz %#x exceeds p_memsz %#x", ErrInvalidKernel, i, p.Filesz, p.Memsz)
			}
			end := p.Paddr + p.Memsz
			if end < p.Paddr {
				return nil, fmt.Errorf("%w: segment %d: p_paddr %#x + p_memsz %#x overflows", ErrInvalidKernel, i, p.Paddr, p.Memsz)
			}
			// 3. Placement.
			if err := checkPlacement(i, p.Paddr, end, ramBytes, lowEnd); err != nil {
				return nil, err
			}
			k.Segments = append(k.Segments, LoadSegment{
				PhysAddr: p.Paddr,
				FileSize: p.Filesz,
				MemSize:  p.Memsz,
				Data:     io.NewSectionReader(r, int64(p.Off), int64(p.Filesz)),
			})
		case elf.PT_NOTE:
			// 4. Notes.
			if err := k.parseNotes(i, p, img, size); err != nil {
				return nil, err
			}
		}
	}
	if len(k.Segments) == 0 {
		return nil, fmt.Errorf("%w: no loadable segments", ErrInvalidKernel)
	}
	slices.SortFunc(k.Segments, func(a, b LoadSegment) int {
		switch {
		case a.PhysAddr < b.PhysAddr:
			return -1
		case a.PhysAddr > b.PhysAddr:
			return 1
		}
		return 0
	})
	for i := 1; i < len(k.Segments); i++ {
		prev, s := k.Segments[i-1], k.Segments[i]
		if s.PhysAddr < prev.PhysAddr+prev.MemSize {
			return nil, fmt.Errorf("%w: segments at [%#x, %#x) and [%#x, %#x) overlap", ErrKernelPlacement,
				prev.PhysAddr, prev.PhysAddr+prev.MemSize, s.PhysAddr, s.PhysAddr+s.MemSize)
		}
	}
	last := k.Segments[len(k.Segments)-1]
	k.End = last.PhysAddr + last.MemSize

	// 5. Entry points.
	if !k.loaded(k.Entry64) {
		return nil, fmt.Errorf("%w: 64-bit entry point %#x is outside the loaded segments", ErrKernelPlacement, k.Entry64)
	}
	if k.HasPVH && !k.loaded(uint64(k.PVHEntry)) {
		return nil, fmt.Errorf("%w: pvh entry point %#x is outside the loaded segments", ErrKernelPlacement, k.PVHEntry)
	}
	return k, nil
}

// checkFileRange checks that the file bytes of program header i lie inside
// an image of size bytes.
func checkFileRange(i int, p *elf.Prog, size int64) error {
	if p.Off > uint64(size) || p.Filesz > uint64(size)-p.Off {
		return fmt.Errorf("%w: segment %d: file range [%#x, +%#x) outside the %d-byte image", ErrInvalidKernel, i, p.Off, p.Filesz, size)
	}
	return nil
}

// checkPlacement checks that segment i, [start, end), lies inside low RAM
// above the reserved first megabyte.
func checkPlacement(i int, start, end, ramBytes, lowEnd uint64) error {
	switch {
	case start < HighMemStart:
		return fmt.Errorf("%w: segment %d at [%#x, %#x) overlaps the reserved area below %#x", ErrKernelPlacement, i, start, end, HighMemStart)
	case end > MMIOGapStart && start < MMIOGapEnd:
		return fmt.Errorf("%w: segment %d at [%#x, %#x) overlaps the mmio gap [%#x, %#x)", ErrKernelPlacement, i, start, end, MMIOGapStart, uint64(MMIOGapEnd))
	case end > lowEnd:
		return fmt.Errorf("%w: segment %d at [%#x, %#x) lies beyond low ram, which ends at %#x for %d bytes of ram", ErrKernelPlacement, i, start, end, lowEnd, ramBytes)
	}
	return nil
}

// loaded reports whether addr lies inside a loaded segment.
func (k *Kernel) loaded(addr uint64) bool {
	for _, s := range k.Segments {
		if addr >= s.PhysAddr && addr-s.PhysAddr < s.MemSize {
			return true
		}
	}
	return false
}

// errNoteTruncated is wrapped for any note that runs past its segment.
var errNoteTruncated = errors.New("note runs past the end of its segment")

// parseNotes walks the notes of PT_NOTE program header i and records the PVH
// entry point. Each note is a 12-byte header (namesz, descsz, type), then
// the name and the descriptor, each starting at an offset aligned to 4
// bytes, or to 8 when p_align is 8 (ELF gABI, "Note Section").
func (k *Kernel) parseNotes(i int, p *elf.Prog, img io.ReaderAt, size int64) error {
	if err := checkFileRange(i, p, size); err != nil {
		return err
	}
	if p.Filesz > maxNoteBytes {
		return fmt.Errorf("%w: note segment %d: %d bytes exceeds %d", ErrInvalidKernel, i, p.Filesz, maxNoteBytes)
	}
	buf := make([]byte, p.Filesz)
	if _, err := img.ReadAt(buf, int64(p.Off)); err != nil {
		return fmt.Errorf("%w: note segment %d: %w", ErrInvalidKernel, i, err)
	}
	align := uint64(4)
	if p.Align == 8 {
		align = 8
	}
	for off := uint64(0); off < uint64(len(buf)); {
		rest := buf[off:]
		if len(rest) < 12 {
			return fmt.Errorf("%w: note segment %d at offset %#x: %w", ErrInvalidKernel, i, off, errNoteTruncated)
		}
		namesz := uint64(binary.LittleEndian.Uint32(rest[0:]))
		descsz := uint64(binary.LittleEndian.Uint32(rest[4:]))
		typ := binary.LittleEndian.Uint32(rest[8:])
		// Sizes are below 2^32 and len(rest) below maxNoteBytes, so the
		// sums below cannot overflow.
		descOff := alignUp(12+namesz, align)
		next := alignUp(descOff+descsz, align)
		if descOff+descsz > uint64(len(rest)) {
			return fmt.Errorf("%w: note segment %d at offset %#x: %w", ErrInvalidKernel, i, off, errNoteTruncated)
		}
		name := rest[12 : 12+namesz]
		desc := rest[descOff : descOff+descsz]
		if typ == xenElfnotePhys32Entry && bytes.Equal(name, []byte(xenNoteName)) {
			if err := k.setPVHEntry(desc); err != nil {
				return fmt.Errorf("%w: note segment %d at offset %#x: %w", ErrInvalidKernel, i, off, err)
			}
		}
		// The last note's descriptor padding may be cut off.
		off += min(next, uint64(len(rest)))
	}
	return nil
}

// setPVHEntry decodes a XEN_ELFNOTE_PHYS32_ENTRY descriptor. Xen defines a
// 32-bit value, but Linux emits it with _ASM_PTR, 8 bytes on x86-64
// (arch/x86/platform/pvh/head.S; Debian's 6.12 vmlinux has descsz 8), so
// both sizes are accepted.
func (k *Kernel) setPVHEntry(desc []byte) error {
	var entry uint64
	switch len(desc) {
	case 4:
		entry = uint64(binary.LittleEndian.Uint32(desc))
	case 8:
		entry = binary.LittleEndian.Uint64(desc)
	default:
		return fmt.Errorf("pvh entry note descriptor is %d bytes, want 4 or 8", len(desc))
	}
	if entry > 0xffff_ffff {
		return fmt.Errorf("pvh entry point %#x is above 4 GiB", entry)
	}
	if k.HasPVH && uint64(k.PVHEntry) != entry {
		return fmt.Errorf("conflicting pvh entry notes %#x and %#x", k.PVHEntry, entry)
	}
	k.PVHEntry, k.HasPVH = uint32(entry), true
	return nil
}
