// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/arch/amd64"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
)

// Local APIC LVT registers and delivery modes (Intel SDM vol. 3A §11.5.1).
const (
	lapicLVTLINT0   = 0x350
	lapicLVTLINT1   = 0x360
	lvtDeliveryMask = 0x700
	lvtModeExtINT   = 0x7 << 8
	lvtModeNMI      = 0x4 << 8
)

// setupVCPU gives a vCPU its identity and, for vCPU 0, the boot state:
//
//  1. CPUID adjusted for its APIC ID and the topology;
//  2. the boot MSRs;
//  3. the FPU control words;
//  4. LINT0 as ExtINT (the legacy PIC) and LINT1 as NMI, as the MP table
//     says;
//  5. vCPU 0 only: special registers over KVM's defaults, then registers.
func setupVCPU(cpu *kvm.VCPU, supported []amd64.CPUIDEntry, count int, boot *amd64.Boot) error {
	ids, err := amd64.AdjustCPUID(supported, cpu.ID, count)
	if err != nil {
		return fmt.Errorf("vmm: cpuid of vcpu %d: %w", cpu.ID, err)
	}
	entries := make([]kvm.CPUIDEntry, len(ids))
	for i, e := range ids {
		entries[i] = kvm.CPUIDEntry(e)
	}
	if err := cpu.SetCPUID(entries); err != nil {
		return err
	}
	var msrs []kvm.MSR
	for _, m := range amd64.BootMSRs() {
		msrs = append(msrs, kvm.MSR{Index: m.Index, Data: m.Value})
	}
	if err := cpu.SetMSRs(msrs); err != nil {
		return err
	}
	if err := cpu.SetFPU(kvm.FPU{FCW: boot.FPU.FCW, MXCSR: boot.FPU.MXCSR}); err != nil {
		return err
	}
	lapic, err := cpu.LAPIC()
	if err != nil {
		return err
	}
	setLVT(lapic, lapicLVTLINT0, lvtModeExtINT)
	setLVT(lapic, lapicLVTLINT1, lvtModeNMI)
	if err := cpu.SetLAPIC(lapic); err != nil {
		return err
	}
	if cpu.ID != 0 {
		return nil
	}
	sregs, err := cpu.Sregs()
	if err != nil {
		return err
	}
	s := boot.SRegs
	sregs.CS = segment(s.CS)
	sregs.DS, sregs.ES, sregs.FS, sregs.GS, sregs.SS = segment(s.DS), segment(s.ES), segment(s.FS), segment(s.GS), segment(s.SS)
	sregs.TR = segment(s.TR)
	sregs.GDT = kvm.DTable{Base: s.GDT.Base, Limit: s.GDT.Limit}
	sregs.IDT = kvm.DTable{Base: s.IDT.Base, Limit: s.IDT.Limit}
	sregs.CR0, sregs.CR3, sregs.CR4, sregs.EFER = s.CR0, s.CR3, s.CR4, s.EFER
	if err := cpu.SetSregs(sregs); err != nil {
		return err
	}
	r := boot.Regs
	return cpu.SetRegs(kvm.Regs{
		RAX: r.RAX, RBX: r.RBX, RCX: r.RCX, RDX: r.RDX,
		RSI: r.RSI, RDI: r.RDI, RSP: r.RSP, RBP: r.RBP,
		R8: r.R8, R9: r.R9, R10: r.R10, R11: r.R11,
		R12: r.R12, R13: r.R13, R14: r.R14, R15: r.R15,
		RIP: r.RIP, RFLAGS: r.RFLAGS,
	})
}

func setLVT(l *kvm.LAPIC, reg int, mode uint32) {
	v := binary.LittleEndian.Uint32(l[reg:])
	binary.LittleEndian.PutUint32(l[reg:], v&^lvtDeliveryMask|mode)
}

func segment(s amd64.Segment) kvm.Segment {
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	return kvm.Segment{
		Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type,
		Present: b(s.Present), DPL: s.DPL, DB: b(s.DB), S: b(s.S),
		L: b(s.L), G: b(s.G), AVL: b(s.AVL),
	}
}

// runVCPU is the loop of one vCPU goroutine: enter the guest, serve the
// exit, repeat until the machine stops. A guest-caused end is reported
// through finish; a returned error is a host failure.
func (m *Machine) runVCPU(v *vcpu, r *resources) error {
	// The thread stays locked: KVM ties a vCPU to the thread that runs it
	// best, and a thread that was kicked with signals is discarded with the
	// goroutine instead of going back to the scheduler's pool.
	runtime.LockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	for !m.stopping.Load() {
		m.answerInspect(v)
		run, err := v.cpu.Run()
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // kicked, or an AP woken by SIPI: the loop condition decides
		}
		if err != nil {
			return err
		}
		reason := run.Reason()
		v.serving.Store(uint32(reason))
		switch reason {
		case kvm.ExitIO:
			dir, port, size, data, err := run.IO()
			if err != nil {
				return err
			}
			for off := 0; off+size <= len(data); off += size {
				if dir == kvm.IOOut {
					r.pio.write(uint64(port), data[off:off+size])
				} else {
					r.pio.read(uint64(port), data[off:off+size])
				}
			}
		case kvm.ExitMMIO:
			addr, data, isWrite, err := run.MMIO()
			if err != nil {
				return err
			}
			if isWrite {
				r.mmio.write(addr, data)
			} else {
				r.mmio.read(addr, data)
			}
		case kvm.ExitHLT, kvm.ExitIntr, kvm.ExitIRQWindowOpen:
			// With the in-kernel irqchip a halted vCPU waits in KVM;
			// these exits carry nothing to serve.
		case kvm.ExitShutdown:
			m.finish(Exit{Reason: ExitTripleFault, VCPU: v.cpu.ID, Regs: regs(v.cpu)})
		case kvm.ExitSystemEvent:
			m.finish(Exit{Reason: ExitShutdown, VCPU: v.cpu.ID, Detail: fmt.Sprintf("system event %d", run.SystemEvent())})
		case kvm.ExitInternalError:
			sub, data := run.InternalError()
			m.finish(Exit{Reason: ExitInternalError, VCPU: v.cpu.ID, Regs: regs(v.cpu),
				Detail: fmt.Sprintf("kvm internal error, suberror %d, data %#x", sub, data)})
		case kvm.ExitFailEntry:
			m.finish(Exit{Reason: ExitInternalError, VCPU: v.cpu.ID, Regs: regs(v.cpu),
				Detail: fmt.Sprintf("vm entry failed, hardware reason %#x", run.FailEntry())})
		default:
			m.finish(Exit{Reason: ExitInternalError, VCPU: v.cpu.ID, Regs: regs(v.cpu),
				Detail: fmt.Sprintf("unhandled exit %v", reason)})
		}
		v.serving.Store(uint32(kvm.ExitUnknown))
	}
	return nil
}

func regs(c *kvm.VCPU) *kvm.Regs {
	r, err := c.Regs()
	if err != nil {
		return nil
	}
	return &r
}
