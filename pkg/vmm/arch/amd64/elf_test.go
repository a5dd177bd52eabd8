// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// testProg is one program header of a generated ELF file.
type testProg struct {
	typ   elf.ProgType
	paddr uint64
	memsz uint64 // 0: len(data)
	align uint64
	data  []byte
}

// buildELF returns a little-endian ELF64 x86-64 executable with entry point
// entry and the given program headers, their data laid out after the
// headers, and no section headers.
func buildELF(entry uint64, progs ...testProg) []byte {
	le := binary.LittleEndian
	const ehsize, phentsize = 64, 56
	h := make([]byte, ehsize)
	copy(h, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	le.PutUint16(h[16:], uint16(elf.ET_EXEC))
	le.PutUint16(h[18:], uint16(elf.EM_X86_64))
	le.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(h[24:], entry)
	le.PutUint64(h[32:], ehsize)
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phentsize)
	le.PutUint16(h[56:], uint16(len(progs)))
	le.PutUint16(h[58:], 64)

	off := uint64(ehsize + phentsize*len(progs))
	var ph, data []byte
	for _, p := range progs {
		memsz := p.memsz
		if memsz == 0 {
			memsz = uint64(len(p.data))
		}
		e := make([]byte, phentsize)
		le.PutUint32(e[0:], uint32(p.typ))
		le.PutUint32(e[4:], uint32(elf.PF_R|elf.PF_X))
		le.PutUint64(e[8:], off)
		le.PutUint64(e[16:], p.paddr+0xffffffff80000000)
		le.PutUint64(e[24:], p.paddr)
		le.PutUint64(e[32:], uint64(len(p.data)))
		le.PutUint64(e[40:], memsz)
		le.PutUint64(e[48:], p.align)
		ph = append(ph, e...)
		data = append(data, p.data...)
		off += uint64(len(p.data))
	}
	return append(append(h, ph...), data...)
}

// elfNote returns one ELF note with 4-byte padding.
func elfNote(name string, typ uint32, desc []byte) []byte { return elfNoteAligned(4, name, typ, desc) }

// elfNoteAligned returns one ELF note with name and descriptor starting at
// offsets aligned to align.
func elfNoteAligned(align int, name string, typ uint32, desc []byte) []byte {
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, uint32(len(name)))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, name...)
	for len(b)%align != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%align != 0 {
		b = append(b, 0)
	}
	return b
}

func pvhNote32(entry uint32) []byte {
	return elfNote(xenNoteName, xenElfnotePhys32Entry, binary.LittleEndian.AppendUint32(nil, entry))
}

func pvhNote64(entry uint64) []byte {
	return elfNote(xenNoteName, xenElfnotePhys32Entry, binary.LittleEndian.AppendUint64(nil, entry))
}

// Kernel addresses as a vmlinux links them: text at 16 MiB.
const (
	testText  = 0x100_0000
	testData  = 0x120_0000
	testPVH   = testText + 0x40
	testRAM   = 256 << 20
	testEntry = testText
)

var (
	textBytes = bytes.Repeat([]byte{0x90}, 0x100)
	dataBytes = bytes.Repeat([]byte{0xab}, 0x80)
)

// testKernelELF returns a small vmlinux-like image: text, data with bss, the
// Xen PVH note plus an unrelated note.
func testKernelELF() []byte {
	notes := append(elfNote("GNU\x00", 3, []byte{1, 2, 3, 4, 5, 6, 7, 8}), pvhNote32(testPVH)...)
	return buildELF(testEntry,
		testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes},
		testProg{typ: elf.PT_LOAD, paddr: testData, memsz: 0x2000, data: dataBytes},
		testProg{typ: elf.PT_NOTE, paddr: testText + 0x80, align: 4, data: notes},
	)
}

func parse(img []byte, ram uint64) (*Kernel, error) {
	return ParseELF(bytes.NewReader(img), int64(len(img)), ram)
}

func TestParseELF(t *testing.T) {
	k, err := parse(testKernelELF(), testRAM)
	if err != nil {
		t.Fatalf("ParseELF(test kernel) = %v, want nil", err)
	}
	if k.Entry64 != testEntry {
		t.Errorf("Entry64 = %#x, want %#x", k.Entry64, testEntry)
	}
	if e, err := k.PVH(); err != nil || e != testPVH || !k.HasPVH {
		t.Errorf("PVH() = %#x, %v (HasPVH %v), want %#x, nil", e, err, k.HasPVH, testPVH)
	}
	if k.End != testData+0x2000 {
		t.Errorf("End = %#x, want %#x", k.End, testData+0x2000)
	}
	want := []struct {
		addr, file, mem uint64
		data            []byte
	}{
		{testText, 0x100, 0x100, textBytes},
		{testData, 0x80, 0x2000, dataBytes},
	}
	if len(k.Segments) != len(want) {
		t.Fatalf("len(Segments) = %d, want %d", len(k.Segments), len(want))
	}
	for i, w := range want {
		s := k.Segments[i]
		if s.PhysAddr != w.addr || s.FileSize != w.file || s.MemSize != w.mem {
			t.Errorf("Segments[%d] = {%#x, %#x, %#x}, want {%#x, %#x, %#x}", i, s.PhysAddr, s.FileSize, s.MemSize, w.addr, w.file, w.mem)
		}
		got, err := io.ReadAll(s.Data)
		if err != nil || !bytes.Equal(got, w.data) {
			t.Errorf("Segments[%d].Data = %x, %v, want %x", i, got, err, w.data)
		}
	}
}

func TestParseELFVariants(t *testing.T) {
	tests := []struct {
		name    string
		img     []byte
		ram     uint64
		pvh     uint32
		hasPVH  bool
		nSegs   int
		firstPA uint64
	}{
		{
			name: "no note",
			img:  buildELF(testEntry, testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes}),
			ram:  testRAM, nSegs: 1, firstPA: testText,
		},
		{
			name: "8-byte pvh note",
			img: buildELF(testEntry,
				testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes},
				testProg{typ: elf.PT_NOTE, data: pvhNote64(testPVH)}),
			ram: testRAM, pvh: testPVH, hasPVH: true, nSegs: 1, firstPA: testText,
		},
		{
			name: "8-byte aligned notes",
			img: buildELF(testEntry,
				testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes},
				testProg{typ: elf.PT_NOTE, align: 8, data: append(
					elfNoteAligned(8, "GNU\x00", 5, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}),
					elfNoteAligned(8, "Xen\x00", xenElfnotePhys32Entry, binary.LittleEndian.AppendUint64(nil, testPVH))...)}),
			ram: testRAM, pvh: testPVH, hasPVH: true, nSegs: 1, firstPA: testText,
		},
		{
			name: "repeated identical notes",
			img: buildELF(testEntry,
				testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes},
				testProg{typ: elf.PT_NOTE, data: append(pvhNote32(testPVH), pvhNote64(testPVH)...)}),
			ram: testRAM, pvh: testPVH, hasPVH: true, nSegs: 1, firstPA: testText,
		},
		{
			name: "segments out of order, empty one skipped",
			img: buildELF(testData,
				testProg{typ: elf.PT_LOAD, paddr: testData, data: dataBytes},
				testProg{typ: elf.PT_LOAD, paddr: 0x5000},
				testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes}),
			ram: testRAM, nSegs: 2, firstPA: testText,
		},
		{
			name: "note with another owner and type 18",
			img: buildELF(testEntry,
				testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes},
				testProg{typ: elf.PT_NOTE, data: elfNote("Linux\x00", xenElfnotePhys32Entry, []byte{1, 2, 3, 4})}),
			ram: testRAM, nSegs: 1, firstPA: testText,
		},
		{
			name: "kernel ends exactly at the mmio gap",
			img: buildELF(0xd000_0000-0x100,
				testProg{typ: elf.PT_LOAD, paddr: 0xd000_0000 - 0x100, data: textBytes}),
			ram: 8 << 30, nSegs: 1, firstPA: 0xd000_0000 - 0x100,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := parse(tt.img, tt.ram)
			if err != nil {
				t.Fatalf("ParseELF = %v, want nil", err)
			}
			if k.HasPVH != tt.hasPVH || k.PVHEntry != tt.pvh {
				t.Errorf("HasPVH, PVHEntry = %v, %#x, want %v, %#x", k.HasPVH, k.PVHEntry, tt.hasPVH, tt.pvh)
			}
			if _, err := k.PVH(); tt.hasPVH == errors.Is(err, ErrNoPVHNote) {
				t.Errorf("PVH() error = %v, want ErrNoPVHNote: %v", err, !tt.hasPVH)
			}
			if len(k.Segments) != tt.nSegs || k.Segments[0].PhysAddr != tt.firstPA {
				t.Errorf("segments = %+v, want %d starting at %#x", k.Segments, tt.nSegs, tt.firstPA)
			}
		})
	}
}

func TestParseELFErrors(t *testing.T) {
	load := testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes}
	patch := func(img []byte, off int, v ...byte) []byte {
		img = bytes.Clone(img)
		copy(img[off:], v)
		return img
	}
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	const ph0 = 64 // first program header
	many := make([]testProg, MaxKernelSegments+1)
	for i := range many {
		many[i] = testProg{typ: elf.PT_LOAD, paddr: testText + uint64(i)*0x1000, data: []byte{1}}
	}
	tests := []struct {
		name string
		img  []byte
		size int64 // 0: len(img)
		ram  uint64
		want error
	}{
		{"empty", nil, 0, testRAM, ErrInvalidKernel},
		{"not elf", []byte("MZ this is a PE file, not an ELF one at all, sorry about that......."), 0, testRAM, ErrInvalidKernel},
		{"negative size", testKernelELF(), -1, testRAM, ErrInvalidKernel},
		{"truncated header", testKernelELF()[:40], 0, testRAM, ErrInvalidKernel},
		{"32-bit class", patch(testKernelELF(), 4, byte(elf.ELFCLASS32)), 0, testRAM, ErrInvalidKernel},
		{"big endian", patch(testKernelELF(), 5, byte(elf.ELFDATA2MSB)), 0, testRAM, ErrInvalidKernel},
		{"aarch64", patch(testKernelELF(), 18, byte(elf.EM_AARCH64)), 0, testRAM, ErrInvalidKernel},
		{"shared object", patch(testKernelELF(), 16, byte(elf.ET_DYN)), 0, testRAM, ErrInvalidKernel},
		{"no segments", buildELF(testEntry), 0, testRAM, ErrInvalidKernel},
		{"only a note", buildELF(testEntry, testProg{typ: elf.PT_NOTE, data: pvhNote32(testPVH)}), 0, testRAM, ErrInvalidKernel},
		{"truncated file", testKernelELF()[:len(testKernelELF())-300], 0, testRAM, ErrInvalidKernel},
		{"offset past the end", patch(buildELF(testEntry, load), ph0+8, u64(1<<40)...), 0, testRAM, ErrInvalidKernel},
		{"offset overflow", patch(buildELF(testEntry, load), ph0+8, u64(^uint64(0))...), 0, testRAM, ErrInvalidKernel},
		{"filesz past the end", patch(buildELF(testEntry, load), ph0+32, u64(0x1_0000)...), 0, testRAM, ErrInvalidKernel},
		{"filesz above memsz", patch(buildELF(testEntry, load), ph0+40, u64(0x10)...), 0, testRAM, ErrInvalidKernel},
		{"paddr overflow", patch(buildELF(testEntry, load), ph0+24, u64(^uint64(0)-0x10)...), 0, testRAM, ErrInvalidKernel},
		{"too many segments", buildELF(testEntry, many...), 0, testRAM, ErrInvalidKernel},
		{"absurd memsz", patch(buildELF(testEntry, load), ph0+40, u64(1<<62)...), 0, testRAM, ErrKernelPlacement},
		{"in the reserved low megabyte", buildELF(0xf_0000, testProg{typ: elf.PT_LOAD, paddr: 0xf_0000, data: textBytes}), 0, testRAM, ErrKernelPlacement},
		{"at zero", buildELF(0, testProg{typ: elf.PT_LOAD, paddr: 0, data: textBytes}), 0, testRAM, ErrKernelPlacement},
		{"straddles 1 MiB", buildELF(HighMemStart, testProg{typ: elf.PT_LOAD, paddr: HighMemStart - 0x10, data: textBytes}), 0, testRAM, ErrKernelPlacement},
		{"beyond ram", buildELF(testEntry, testProg{typ: elf.PT_LOAD, paddr: testText, data: textBytes}), 0, 16 << 20, ErrKernelPlacement},
		{"bss beyond ram", buildELF(testText, testProg{typ: elf.PT_LOAD, paddr: testText, memsz: 32 << 20, data: textBytes}), 0, 32 << 20, ErrKernelPlacement},
		{"into the mmio gap", buildELF(0xcfff_0000, testProg{typ: elf.PT_LOAD, paddr: 0xcfff_0000, memsz: 0x2_0000, data: textBytes}), 0, 8 << 30, ErrKernelPlacement},
		{"inside the mmio gap", buildELF(IOAPICAddr, testProg{typ: elf.PT_LOAD, paddr: IOAPICAddr, data: textBytes}), 0, 8 << 30, ErrKernelPlacement},
		{"in high ram", buildELF(HighRAMStart, testProg{typ: elf.PT_LOAD, paddr: HighRAMStart, data: textBytes}), 0, 8 << 30, ErrKernelPlacement},
		{"overlapping segments", buildELF(testEntry, load, testProg{typ: elf.PT_LOAD, paddr: testText + 0x80, data: textBytes}), 0, testRAM, ErrKernelPlacement},
		{"entry outside segments", buildELF(testData, load), 0, testRAM, ErrKernelPlacement},
		{"entry just past a segment", buildELF(testText+0x100, load), 0, testRAM, ErrKernelPlacement},
		{"pvh entry outside segments", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: pvhNote32(testData)}), 0, testRAM, ErrKernelPlacement},
		{"pvh entry above 4 GiB", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: pvhNote64(1 << 32)}), 0, testRAM, ErrInvalidKernel},
		{"pvh descriptor of 2 bytes", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: elfNote(xenNoteName, xenElfnotePhys32Entry, []byte{1, 2})}), 0, testRAM, ErrInvalidKernel},
		{"conflicting pvh notes", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: append(pvhNote32(testPVH), pvhNote32(testPVH+4)...)}), 0, testRAM, ErrInvalidKernel},
		{"note header truncated", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: pvhNote32(testPVH)[:8]}), 0, testRAM, ErrInvalidKernel},
		{"note descriptor truncated", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: pvhNote32(testPVH)[:18]}), 0, testRAM, ErrInvalidKernel},
		{"note namesz huge", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: patch(pvhNote32(testPVH), 0, 0xff, 0xff, 0xff, 0xff)}), 0, testRAM, ErrInvalidKernel},
		{"note descsz huge", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: patch(pvhNote32(testPVH), 4, 0xfc, 0xff, 0xff, 0xff)}), 0, testRAM, ErrInvalidKernel},
		{"note segment too large", buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: make([]byte, maxNoteBytes+4)}), 0, testRAM, ErrInvalidKernel},
		{"note past the end", patch(buildELF(testEntry, load, testProg{typ: elf.PT_NOTE, data: pvhNote32(testPVH)}), ph0+56+32, u64(0x1000)...), 0, testRAM, ErrInvalidKernel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := tt.size
			if size == 0 {
				size = int64(len(tt.img))
			}
			k, err := ParseELF(bytes.NewReader(tt.img), size, tt.ram)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseELF(%s) = %+v, %v, want error %v", tt.name, k, err, tt.want)
			}
			if k != nil {
				t.Errorf("ParseELF(%s) returned a kernel with error %v", tt.name, err)
			}
		})
	}
}

// repoRoot returns the directory holding go.mod above the working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// TestParseVmlinux parses the guest kernel kernel/build.sh produces, when it
// exists, and requires the PVH note (CONFIG_PVH=y in kernel/microvm.fragment).
func TestParseVmlinux(t *testing.T) {
	path := os.Getenv("MSB_VMLINUX")
	if path == "" {
		path = filepath.Join(repoRoot(t), "build", "vmlinux")
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("no guest kernel at %s: run kernel/build.sh or set MSB_VMLINUX", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	const ram = 512 << 20
	k, err := ParseELF(f, fi.Size(), ram)
	if err != nil {
		t.Fatalf("ParseELF(%s) = %v", path, err)
	}
	entry, err := k.PVH()
	if err != nil {
		t.Fatalf("PVH() = %v, want the XEN_ELFNOTE_PHYS32_ENTRY note", err)
	}
	t.Logf("%s: %d segments, end %#x, entry64 %#x, pvh %#x", path, len(k.Segments), k.End, k.Entry64, entry)
	for i, s := range k.Segments {
		t.Logf("segment %d: paddr %#x filesz %#x memsz %#x", i, s.PhysAddr, s.FileSize, s.MemSize)
	}
	b, err := Plan(k, BootConfig{RAMBytes: ram, VCPUs: 2, Cmdline: "console=ttyS0", InitrdSize: 4 << 20})
	if err != nil {
		t.Fatalf("Plan(vmlinux) = %v", err)
	}
	if b.Protocol != ProtocolPVH || b.Regs.RIP != uint64(entry) {
		t.Errorf("Plan(vmlinux) = %v at %#x, want pvh at %#x", b.Protocol, b.Regs.RIP, entry)
	}
}
