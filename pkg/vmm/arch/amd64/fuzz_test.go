// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"testing"
)

// FuzzParseELF feeds arbitrary images and RAM sizes to ParseELF. It must
// never panic; an accepted kernel must satisfy every invariant Kernel
// documents, and a rejected one must wrap a sentinel.
func FuzzParseELF(f *testing.F) {
	load := testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes}
	f.Add(testKernelELF(), uint32(testRAM/PageSize))
	f.Add(buildELF(testEntry, load), uint32(testRAM/PageSize))
	f.Add(buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: pvhNote64(testPVH)}), uint32(testRAM/PageSize))
	f.Add(buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, align: 8, data: elfNoteAligned(8, "Xen\x00", 18, []byte{0x40, 0, 0, 1, 0, 0, 0, 0})}), uint32(8<<30/PageSize))
	f.Add(buildELF(0xcfff_0000, testProg{typ: elf.PT_LOAD, paddr: 0xcfff_0000, memsz: 0x2_0000, data: textBytes}), uint32(8<<30/PageSize))
	f.Add(buildELF(testEntry, load, testProg{typ: elf.PT_LOAD, paddr: testText + 0x80, data: textBytes}), uint32(testRAM/PageSize))
	f.Add([]byte("\x7fELF\x02\x01\x01"), uint32(0))
	f.Add([]byte{}, uint32(1))

	f.Fuzz(func(t *testing.T, img []byte, ramPages uint32) {
		ram := uint64(ramPages) * PageSize
		k, err := ParseELF(bytes.NewReader(img), int64(len(img)), ram)
		if err != nil {
			if k != nil {
				t.Fatalf("ParseELF returned a kernel and error %v", err)
			}
			if !errors.Is(err, ErrInvalidKernel) && !errors.Is(err, ErrKernelPlacement) {
				t.Fatalf("ParseELF error %v wraps no sentinel", err)
			}
			return
		}
		if len(k.Segments) == 0 || len(k.Segments) > MaxKernelSegments {
			t.Fatalf("%d segments", len(k.Segments))
		}
		low := LowRAMEnd(ram)
		prevEnd := uint64(HighMemStart)
		for i, s := range k.Segments {
			if s.PhysAddr < prevEnd || s.MemSize == 0 || s.FileSize > s.MemSize || s.PhysAddr+s.MemSize > low {
				t.Fatalf("segment %d %+v misplaced (previous end %#x, low ram end %#x)", i, s, prevEnd, low)
			}
			prevEnd = s.PhysAddr + s.MemSize
			n, err := io.Copy(io.Discard, s.Data)
			if err != nil || uint64(n) != s.FileSize {
				t.Fatalf("segment %d read %d bytes, %v, want %d", i, n, err, s.FileSize)
			}
		}
		if k.End != prevEnd || !k.loaded(k.Entry64) || k.HasPVH && !k.loaded(uint64(k.PVHEntry)) {
			t.Fatalf("kernel %+v: end or entry points inconsistent", k)
		}
		if _, err := k.PVH(); k.HasPVH != (err == nil) {
			t.Fatalf("PVH() = %v with HasPVH %v", err, k.HasPVH)
		}
	})
}
