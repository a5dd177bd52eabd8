// SPDX-License-Identifier: Apache-2.0

package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// CPUIDEntry is struct kvm_cpuid_entry2 without its padding.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
}

// MSR is struct kvm_msr_entry: a model-specific register and its value.
type MSR struct {
	Index uint32
	Data  uint64
}

// FPU is struct kvm_fpu: x87 and SSE state.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// LAPICSize is the size of struct kvm_lapic_state: the local APIC's register
// page as KVM stores it (KVM_APIC_REG_SIZE).
const LAPICSize = 0x400

// LAPIC is struct kvm_lapic_state: the local APIC registers at their MMIO
// offsets.
type LAPIC [LAPICSize]byte

// Structure sizes from kvm.h.
const (
	sizeofCPUIDHeader = 8  // struct kvm_cpuid2 without entries
	sizeofCPUIDEntry  = 40 // struct kvm_cpuid_entry2
	sizeofMSRsHeader  = 8  // struct kvm_msrs without entries
	sizeofMSREntry    = 16 // struct kvm_msr_entry
	sizeofFPU         = 416
	sizeofPITConfig   = 64
	sizeofIRQFD       = 32
	sizeofIOEventFD   = 64

	// maxCPUIDEntries is KVM_MAX_CPUID_ENTRIES.
	maxCPUIDEntries = 256
)

// SupportedCPUID returns the CPUID leaves KVM can expose to a guest.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	buf := make([]byte, sizeofCPUIDHeader+maxCPUIDEntries*sizeofCPUIDEntry)
	binary.LittleEndian.PutUint32(buf, maxCPUIDEntries)
	if err := ioctlPtr(s.fd, ioctlGetSupportedCPUID, &buf[0]); err != nil {
		return nil, fmt.Errorf("kvm: get supported cpuid: %w", err)
	}
	n := binary.LittleEndian.Uint32(buf)
	if n > maxCPUIDEntries {
		return nil, fmt.Errorf("kvm: get supported cpuid: %d entries, more than the %d asked for", n, maxCPUIDEntries)
	}
	out := make([]CPUIDEntry, n)
	for i := range out {
		e := buf[sizeofCPUIDHeader+i*sizeofCPUIDEntry:]
		out[i] = CPUIDEntry{
			Function: binary.LittleEndian.Uint32(e[0:]),
			Index:    binary.LittleEndian.Uint32(e[4:]),
			Flags:    binary.LittleEndian.Uint32(e[8:]),
			EAX:      binary.LittleEndian.Uint32(e[12:]),
			EBX:      binary.LittleEndian.Uint32(e[16:]),
			ECX:      binary.LittleEndian.Uint32(e[20:]),
			EDX:      binary.LittleEndian.Uint32(e[24:]),
		}
	}
	return out, nil
}

// SetCPUID sets the CPUID leaves the vCPU reports.
func (c *VCPU) SetCPUID(entries []CPUIDEntry) error {
	if len(entries) > maxCPUIDEntries {
		return fmt.Errorf("kvm: set cpuid of vcpu %d: %d entries, at most %d", c.ID, len(entries), maxCPUIDEntries)
	}
	buf := make([]byte, sizeofCPUIDHeader+len(entries)*sizeofCPUIDEntry)
	binary.LittleEndian.PutUint32(buf, uint32(len(entries)))
	for i, e := range entries {
		b := buf[sizeofCPUIDHeader+i*sizeofCPUIDEntry:]
		for j, v := range []uint32{e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX} {
			binary.LittleEndian.PutUint32(b[4*j:], v)
		}
	}
	if err := ioctlPtr(c.fd, ioctlSetCPUID2, &buf[0]); err != nil {
		return fmt.Errorf("kvm: set cpuid of vcpu %d: %w", c.ID, err)
	}
	return nil
}

// SetMSRs writes model-specific registers; all must be accepted.
func (c *VCPU) SetMSRs(msrs []MSR) error {
	if len(msrs) == 0 {
		return nil
	}
	buf := make([]byte, sizeofMSRsHeader+len(msrs)*sizeofMSREntry)
	binary.LittleEndian.PutUint32(buf, uint32(len(msrs)))
	for i, m := range msrs {
		b := buf[sizeofMSRsHeader+i*sizeofMSREntry:]
		binary.LittleEndian.PutUint32(b, m.Index)
		binary.LittleEndian.PutUint64(b[8:], m.Data)
	}
	n, err := ioctlPtrN(c.fd, ioctlSetMSRs, &buf[0])
	if err != nil {
		return fmt.Errorf("kvm: set msrs of vcpu %d: %w", c.ID, err)
	}
	if n != len(msrs) {
		return fmt.Errorf("kvm: set msrs of vcpu %d: msr %#x refused (%d of %d set)", c.ID, msrs[n].Index, n, len(msrs))
	}
	return nil
}

// SetFPU writes the x87/SSE state.
func (c *VCPU) SetFPU(f FPU) error {
	if err := ioctlPtr(c.fd, ioctlSetFPU, &f); err != nil {
		return fmt.Errorf("kvm: set fpu of vcpu %d: %w", c.ID, err)
	}
	return nil
}

// LAPIC reads the local APIC state (needs the in-kernel irqchip).
func (c *VCPU) LAPIC() (*LAPIC, error) {
	var l LAPIC
	if err := ioctlPtr(c.fd, ioctlGetLAPIC, &l); err != nil {
		return nil, fmt.Errorf("kvm: get lapic of vcpu %d: %w", c.ID, err)
	}
	return &l, nil
}

// SetLAPIC writes the local APIC state.
func (c *VCPU) SetLAPIC(l *LAPIC) error {
	if err := ioctlPtr(c.fd, ioctlSetLAPIC, l); err != nil {
		return fmt.Errorf("kvm: set lapic of vcpu %d: %w", c.ID, err)
	}
	return nil
}

// SetIdentityMapAddr places the one page Intel VMX needs for its real-mode
// identity map (below 4 GiB, outside guest RAM).
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if err := ioctlPtr(vm.fd, ioctlSetIdentityMapAddr, &addr); err != nil {
		return fmt.Errorf("kvm: set identity map addr %#x: %w", addr, err)
	}
	return nil
}

// pitSpeakerDummy is KVM_PIT_SPEAKER_DUMMY: port 0x61 reads as a dummy
// speaker instead of exiting to user space.
const pitSpeakerDummy = 1

// CreatePIT2 creates the in-kernel i8254 timer (after CreateIRQChip).
func (vm *VM) CreatePIT2() error {
	var cfg [sizeofPITConfig]byte
	binary.LittleEndian.PutUint32(cfg[:], pitSpeakerDummy)
	if err := ioctlPtr(vm.fd, ioctlCreatePIT2, &cfg); err != nil {
		return fmt.Errorf("kvm: create pit2: %w", err)
	}
	return nil
}

// IRQLine sets the level of an interrupt line of the in-kernel irqchip.
func (vm *VM) IRQLine(irq uint32, high bool) error {
	var lv [8]byte
	binary.LittleEndian.PutUint32(lv[:], irq)
	if high {
		binary.LittleEndian.PutUint32(lv[4:], 1)
	}
	if err := ioctlPtr(vm.fd, ioctlIRQLine, &lv); err != nil {
		return fmt.Errorf("kvm: irq line %d: %w", irq, err)
	}
	return nil
}

// irqfd flags (KVM_IRQFD_FLAG_*).
const irqfdDeassign = 1

// IRQFD makes a write to eventfd fd inject interrupt gsi (edge), or stops
// doing so when deassign is set.
func (vm *VM) IRQFD(fd int, gsi uint32, deassign bool) error {
	var b [sizeofIRQFD]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(fd))
	binary.LittleEndian.PutUint32(b[4:], gsi)
	if deassign {
		binary.LittleEndian.PutUint32(b[8:], irqfdDeassign)
	}
	if err := ioctlPtr(vm.fd, ioctlIRQFD, &b); err != nil {
		return fmt.Errorf("kvm: irqfd gsi %d: %w", gsi, err)
	}
	return nil
}

// IOEventFD options (KVM_IOEVENTFD_FLAG_*).
const (
	IOEventDataMatch = 1 << 0
	IOEventPIO       = 1 << 1
	IOEventDeassign  = 1 << 2
)

// IOEventFD makes a guest write of size bytes at addr signal eventfd fd
// instead of exiting (with IOEventDataMatch, only writes of datamatch).
func (vm *VM) IOEventFD(fd int, addr uint64, size uint32, datamatch uint64, flags uint32) error {
	var b [sizeofIOEventFD]byte
	binary.LittleEndian.PutUint64(b[0:], datamatch)
	binary.LittleEndian.PutUint64(b[8:], addr)
	binary.LittleEndian.PutUint32(b[16:], size)
	binary.LittleEndian.PutUint32(b[20:], uint32(int32(fd)))
	binary.LittleEndian.PutUint32(b[24:], flags)
	if err := ioctlPtr(vm.fd, ioctlIOEventFD, &b); err != nil {
		return fmt.Errorf("kvm: ioeventfd at %#x: %w", addr, err)
	}
	return nil
}

// Kick interrupts a vCPU thread blocked in KVM_RUN: with immediate_exit set
// beforehand, the run returns EINTR and does not re-enter the guest. tid is
// the thread that runs the vCPU.
func Kick(tid int) error {
	// SIGURG: the Go runtime's own preemption signal, whose handler is
	// installed in every Go program and ignores unexpected deliveries.
	err := unix.Tgkill(unix.Getpid(), tid, unix.SIGURG)
	if errors.Is(err, unix.ESRCH) {
		return nil // the thread is gone: nothing to interrupt
	}
	return err
}
