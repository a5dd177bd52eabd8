// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"errors"
	"reflect"
	"slices"
	"testing"
)

func reg(s string) uint32 { return le.Uint32([]byte(s)) }

// KVM's paravirtual leaves, as KVM_GET_SUPPORTED_CPUID lists them.
var kvmLeaves = []CPUIDEntry{
	{Function: KVMCPUIDSignatureLeaf, EAX: 0x40000001, EBX: reg("KVMK"), ECX: reg("VMKV"), EDX: reg("M\x00\x00\x00")},
	{Function: 0x40000001, EAX: 0x01007afb},
}

// intelSupported is a trimmed KVM_GET_SUPPORTED_CPUID from an Intel host.
var intelSupported = append([]CPUIDEntry{
	{Function: 0, EAX: 0x1f, EBX: reg("Genu"), EDX: reg("ineI"), ECX: reg("ntel")},
	{Function: 1, EAX: 0x906ea, EBX: 0xaabb0800, ECX: 0x7ffa3203, EDX: 0x1f8bfbff | features1EDXHTT},
	{Function: 4, Index: 0, Flags: 1, EAX: 0x1c004121, EBX: 0x01c0003f, ECX: 0x3f},
	{Function: 4, Index: 1, Flags: 1, EAX: 0x1c004122, EBX: 0x01c0003f, ECX: 0x3f},
	{Function: 4, Index: 2, Flags: 1, EAX: 0x1c004143, EBX: 0x00c0003f, ECX: 0x3ff},
	{Function: 4, Index: 3, Flags: 1, EAX: 0x1c03c163, EBX: 0x03c0003f, ECX: 0x2fff},
	{Function: 4, Index: 4, Flags: 1},
	{Function: 0xb, Index: 0, Flags: 1, EAX: 1, EBX: 2, ECX: 0x100, EDX: 7},
	{Function: 0xb, Index: 1, Flags: 1, EAX: 4, EBX: 12, ECX: 0x201, EDX: 7},
	{Function: 0x1f, Index: 0, Flags: 1, EAX: 1, EBX: 2, ECX: 0x100, EDX: 7},
	{Function: 0x80000001, ECX: 0x121, EDX: 0x2c100800},
	{Function: 0x80000008, EAX: 0x3027, ECX: 0x1007},
}, kvmLeaves...)

// amdSupported is a trimmed KVM_GET_SUPPORTED_CPUID from an AMD host.
var amdSupported = append([]CPUIDEntry{
	{Function: 0, EAX: 0x10, EBX: reg("Auth"), EDX: reg("enti"), ECX: reg("cAMD")},
	{Function: 1, EAX: 0xa20f10, EBX: 0x00100800, ECX: 0x7ed8320b, EDX: 0x178bfbff},
	{Function: 0x80000001, ECX: 0x75c237ff | ext1ECXCmpLegacy, EDX: 0x2fd3fbff},
	{Function: 0x80000008, EAX: 0x3030, EBX: 0x1, ECX: 0x0003_700f},
	{Function: 0x8000001e, EAX: 5, EBX: 0x0103, ECX: 0x0301, EDX: 0xff},
}, kvmLeaves...)

func find(t *testing.T, es []CPUIDEntry, fn, idx uint32) CPUIDEntry {
	t.Helper()
	for _, e := range es {
		if e.Function == fn && e.Index == idx {
			return e
		}
	}
	t.Fatalf("no cpuid leaf %#x.%d", fn, idx)
	return CPUIDEntry{}
}

func TestAdjustCPUIDIntel(t *testing.T) {
	orig := slices.Clone(intelSupported)
	tests := []struct {
		cpu, n  int
		leaf1B  uint32 // EBX of leaf 1
		htt     bool
		cores   uint32 // leaf 4 EAX[31:26]
		l3share uint32 // leaf 4 L3 EAX[25:14]
		shift   uint32 // leaf 0xB core-level EAX
	}{
		{0, 1, 0x00010800, false, 0, 0, 0},
		{1, 2, 0x01020800, true, 1, 1, 1},
		{3, 4, 0x03040800, true, 3, 3, 2},
		{4, 5, 0x04050800, true, 4, 4, 3},
		{99, 100, 0x63640800, true, 63, 99, 7},
		{253, 254, 0xfdfe0800, true, 63, 253, 8},
	}
	for _, tt := range tests {
		got, err := AdjustCPUID(intelSupported, tt.cpu, tt.n)
		if err != nil {
			t.Fatalf("AdjustCPUID(intel, %d, %d) = %v", tt.cpu, tt.n, err)
		}
		l1 := find(t, got, 1, 0)
		if l1.EBX != tt.leaf1B || (l1.EDX&features1EDXHTT != 0) != tt.htt || l1.ECX&features1ECXHypervisor == 0 {
			t.Errorf("AdjustCPUID(intel, %d, %d) leaf 1 = EBX %#x EDX %#x ECX %#x, want EBX %#x HTT %v hypervisor", tt.cpu, tt.n, l1.EBX, l1.EDX, l1.ECX, tt.leaf1B, tt.htt)
		}
		if l1.EAX != 0x906ea || l1.EDX&^features1EDXHTT != 0x0f8bfbff || l1.ECX&^features1ECXHypervisor != 0x7ffa3203 {
			t.Errorf("AdjustCPUID(intel, %d, %d) changed other leaf 1 bits: %+v", tt.cpu, tt.n, l1)
		}
		for idx, level := range []uint32{1, 1, 2, 3} {
			e := find(t, got, 4, uint32(idx))
			share := uint32(0)
			if level == 3 {
				share = tt.l3share
			}
			if e.EAX>>26 != tt.cores || e.EAX>>14&0xfff != share || e.EAX&0x3fff != intelSupported[2+idx].EAX&0x3fff || e.EBX != intelSupported[2+idx].EBX {
				t.Errorf("AdjustCPUID(intel, %d, %d) leaf 4.%d EAX = %#x, want cores-1 %d, sharing-1 %d", tt.cpu, tt.n, idx, e.EAX, tt.cores, share)
			}
		}
		if e := find(t, got, 4, 4); e != intelSupported[6] {
			t.Errorf("leaf 4.4 (no cache) changed: %+v", e)
		}
		for _, fn := range []uint32{0xb, 0x1f} {
			want := []CPUIDEntry{
				{Function: fn, Index: 0, Flags: 1, EAX: 0, EBX: 1, ECX: 0x100, EDX: uint32(tt.cpu)},
				{Function: fn, Index: 1, Flags: 1, EAX: tt.shift, EBX: uint32(tt.n), ECX: 0x201, EDX: uint32(tt.cpu)},
				{Function: fn, Index: 2, Flags: 1, EAX: 0, EBX: 0, ECX: 2, EDX: uint32(tt.cpu)},
			}
			var sub []CPUIDEntry
			for _, e := range got {
				if e.Function == fn {
					sub = append(sub, e)
				}
			}
			if !reflect.DeepEqual(sub, want) {
				t.Errorf("AdjustCPUID(intel, %d, %d) leaf %#x = %+v, want %+v", tt.cpu, tt.n, fn, sub, want)
			}
			// The x2APIC ID shifted by the core level's shift is the package ID.
			if uint32(tt.cpu)>>tt.shift != 0 {
				t.Errorf("x2APIC ID %d >> %d is not package 0", tt.cpu, tt.shift)
			}
		}
		for _, e := range []CPUIDEntry{find(t, got, 0x80000008, 0), find(t, got, 0x80000001, 0), find(t, got, 0, 0)} {
			if !slices.Contains(intelSupported, e) {
				t.Errorf("AdjustCPUID(intel) changed leaf %#x: %+v", e.Function, e)
			}
		}
		// Two 0xB and one 0x1F subleaves become three of each.
		if len(got) != len(intelSupported)+3 {
			t.Errorf("AdjustCPUID(intel) returned %d entries, want %d", len(got), len(intelSupported)+3)
		}
	}
	if !reflect.DeepEqual(orig, intelSupported) {
		t.Errorf("AdjustCPUID modified its input")
	}
}

func TestAdjustCPUIDAMD(t *testing.T) {
	tests := []struct {
		cpu, n   int
		cmpLeg   bool
		ecx88    uint32
		eax1e    uint32
		ebx1e    uint32
		leaf1EBX uint32
	}{
		{0, 1, false, 0x0003_0000, 0, 0x00, 0x00010800},
		{1, 2, true, 0x0003_1001, 1, 0x01, 0x01020800},
		{5, 8, true, 0x0003_3007, 5, 0x05, 0x05080800},
		{200, 254, true, 0x0003_80fd, 200, 0xc8, 0xc8fe0800},
	}
	for _, tt := range tests {
		got, err := AdjustCPUID(amdSupported, tt.cpu, tt.n)
		if err != nil {
			t.Fatalf("AdjustCPUID(amd, %d, %d) = %v", tt.cpu, tt.n, err)
		}
		if l1 := find(t, got, 1, 0); l1.EBX != tt.leaf1EBX || l1.ECX&features1ECXHypervisor == 0 {
			t.Errorf("AdjustCPUID(amd, %d, %d) leaf 1 EBX %#x ECX %#x, want EBX %#x and hypervisor", tt.cpu, tt.n, l1.EBX, l1.ECX, tt.leaf1EBX)
		}
		if e := find(t, got, 0x80000001, 0); (e.ECX&ext1ECXCmpLegacy != 0) != tt.cmpLeg || e.ECX|ext1ECXCmpLegacy != amdSupported[2].ECX {
			t.Errorf("AdjustCPUID(amd, %d, %d) leaf 0x80000001 ECX %#x, want CmpLegacy %v", tt.cpu, tt.n, e.ECX, tt.cmpLeg)
		}
		if e := find(t, got, 0x80000008, 0); e.ECX != tt.ecx88 || e.EAX != 0x3030 || e.EBX != 1 {
			t.Errorf("AdjustCPUID(amd, %d, %d) leaf 0x80000008 = %+v, want ECX %#x", tt.cpu, tt.n, e, tt.ecx88)
		}
		if e := find(t, got, 0x8000001e, 0); e.EAX != tt.eax1e || e.EBX != tt.ebx1e || e.ECX != 0 || e.EDX != 0 {
			t.Errorf("AdjustCPUID(amd, %d, %d) leaf 0x8000001e = %+v, want EAX %#x EBX %#x", tt.cpu, tt.n, e, tt.eax1e, tt.ebx1e)
		}
		for _, e := range got {
			if e.Function == 0xb || e.Function == 0x1f {
				t.Errorf("AdjustCPUID(amd) added leaf %#x not in the supported list", e.Function)
			}
		}
	}
}

func TestAdjustCPUIDKeepsKVMLeaves(t *testing.T) {
	for _, sup := range [][]CPUIDEntry{intelSupported, amdSupported} {
		got, err := AdjustCPUID(sup, 0, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range kvmLeaves {
			if e := find(t, got, want.Function, 0); e != want {
				t.Errorf("leaf %#x = %+v, want %+v", want.Function, e, want)
			}
		}
		sig := find(t, got, KVMCPUIDSignatureLeaf, 0)
		if s := string(le32(sig.EBX)) + string(le32(sig.ECX)) + string(le32(sig.EDX)); s != "KVMKVMKVM\x00\x00\x00" {
			t.Errorf("KVM signature = %q", s)
		}
	}
}

func TestAdjustCPUIDUnknownVendor(t *testing.T) {
	sup := []CPUIDEntry{
		{Function: 0, EBX: reg("Cent"), EDX: reg("aurH"), ECX: reg("auls")},
		{Function: 0x80000008, ECX: 0x1234},
	}
	got, err := AdjustCPUID(sup, 1, 4)
	if err != nil || !reflect.DeepEqual(got, sup) {
		t.Errorf("AdjustCPUID(unknown vendor) = %+v, %v, want unchanged", got, err)
	}
}

func TestAdjustCPUIDErrors(t *testing.T) {
	for _, tt := range []struct{ cpu, n int }{{0, 0}, {0, -1}, {0, MaxVCPUs + 1}, {1, 1}, {-1, 2}, {4, 4}} {
		if _, err := AdjustCPUID(intelSupported, tt.cpu, tt.n); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("AdjustCPUID(intel, %d, %d) = %v, want ErrInvalidConfig", tt.cpu, tt.n, err)
		}
	}
}

func TestBootMSRs(t *testing.T) {
	want := map[uint32]uint64{
		0x174: 0, 0x175: 0, 0x176: 0,
		0xc0000081: 0, 0xc0000083: 0, 0xc0000102: 0, 0xc0000084: 0, 0xc0000082: 0,
		0x10:  0,
		0x1a0: 1,
		0x2ff: 0x806,
	}
	got := BootMSRs()
	if len(got) != len(want) {
		t.Fatalf("BootMSRs() has %d entries, want %d", len(got), len(want))
	}
	for _, m := range got {
		if v, ok := want[m.Index]; !ok || v != m.Value {
			t.Errorf("BootMSRs() has {%#x, %#x}, want value %#x (listed %v)", m.Index, m.Value, v, ok)
		}
	}
}
