// SPDX-License-Identifier: Apache-2.0

package kvm_test

import (
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm/kvmtest"
)

func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(kvm.Regs{}), 144},
		{"kvm_sregs", unsafe.Sizeof(kvm.Sregs{}), 312},
		{"kvm_segment", unsafe.Sizeof(kvm.Segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(kvm.DTable{}), 16},
		{"kvm_userspace_memory_region", unsafe.Sizeof(kvm.UserMemoryRegion{}), 32},
		{"kvm_fpu", unsafe.Sizeof(kvm.FPU{}), 416},
		{"kvm_lapic_state", unsafe.Sizeof(kvm.LAPIC{}), 1024},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func openOrSkip(t *testing.T) *kvm.System {
	t.Helper()
	sys, err := kvm.Open()
	if errors.Is(err, kvm.ErrUnavailable) {
		t.Skipf("no usable KVM here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

func TestCapabilities(t *testing.T) {
	sys := openOrSkip(t)
	for _, c := range []kvm.Cap{kvm.CapUserMemory, kvm.CapIRQChip, kvm.CapIRQFD, kvm.CapIOEventFD} {
		v, err := sys.CheckExtension(c)
		if err != nil {
			t.Fatal(err)
		}
		if v == 0 {
			t.Errorf("CheckExtension(%d) = 0, want supported", c)
		}
	}
}

func TestRealModePortOutput(t *testing.T) {
	sys := openOrSkip(t)
	const msg = "hello, port 0x3f8"
	res, err := kvmtest.Run(sys, kvmtest.PrintProgram(0x3f8, msg))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Output(0x3f8); got != msg {
		t.Errorf("port 0x3f8 output = %q, want %q", got, msg)
	}
	if res.Exits != len(msg)+1 {
		t.Errorf("exits = %d, want %d (one per byte and the halt)", res.Exits, len(msg)+1)
	}
}

func TestUnexpectedExitIsAnError(t *testing.T) {
	sys := openOrSkip(t)
	// A write to linear address 0x100000, just past the 1 MiB of RAM, is an
	// MMIO exit, which the runner does not serve.
	code := []byte{
		0xB8, 0xFF, 0xFF, // mov ax, 0xffff
		0x8E, 0xD8, // mov ds, ax (DS base 0xffff0)
		0xC6, 0x06, 0x10, 0x00, 0x41, // mov byte [0x0010], 'A' -> 0x100000
		0xF4, // hlt
	}
	_, err := kvmtest.Run(sys, code)
	if err == nil {
		t.Fatal("Run of a program touching memory outside RAM: got nil error, want an unexpected-exit error")
	}
	if !strings.Contains(err.Error(), "exit mmio") {
		t.Errorf("Run of a program touching memory outside RAM: error %q, want an unexpected mmio exit", err)
	}
}

func TestSupportedCPUID(t *testing.T) {
	sys := openOrSkip(t)
	entries, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	var leaf0 *kvm.CPUIDEntry
	for i := range entries {
		if entries[i].Function == 0 {
			leaf0 = &entries[i]
		}
	}
	if leaf0 == nil || leaf0.EAX == 0 {
		t.Fatalf("SupportedCPUID() has no leaf 0 with a max leaf; got %d entries", len(entries))
	}
}

func TestIRQChipAndPIT(t *testing.T) {
	sys := openOrSkip(t)
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, false); err != nil {
		t.Fatal(err)
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	l, err := cpu.LAPIC()
	if err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetLAPIC(l); err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetFPU(kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}); err != nil {
		t.Fatal(err)
	}
	// IA32_SYSENTER_CS is writable on every x86 vCPU.
	if err := cpu.SetMSRs([]kvm.MSR{{Index: 0x174, Data: 0}}); err != nil {
		t.Fatal(err)
	}
}
