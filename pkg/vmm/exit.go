// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"fmt"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
)

// ExitReason says how a machine ended.
type ExitReason int

// Exit reasons.
const (
	// ExitStopped: Stop was called or Run's context ended.
	ExitStopped ExitReason = iota + 1
	// ExitPowerOff: the guest wrote the power-off switch; Status holds
	// the byte it wrote.
	ExitPowerOff
	// ExitReset: the guest reset the machine through the i8042 reset line
	// (a reboot, which a microVM treats as its end).
	ExitReset
	// ExitPanic: the guest kernel panicked (and reset, with panic=-1);
	// Detail holds the panic line from the console.
	ExitPanic
	// ExitShutdown: the guest asked KVM for a system shutdown or reset
	// (KVM_EXIT_SYSTEM_EVENT).
	ExitShutdown
	// ExitTripleFault: a vCPU took a triple fault (KVM_EXIT_SHUTDOWN).
	ExitTripleFault
	// ExitInternalError: KVM could not run or emulate the guest
	// (KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_FAIL_ENTRY); Regs has the state.
	ExitInternalError
)

func (r ExitReason) String() string {
	switch r {
	case ExitStopped:
		return "stopped"
	case ExitPowerOff:
		return "power-off"
	case ExitReset:
		return "reset"
	case ExitPanic:
		return "panic"
	case ExitShutdown:
		return "shutdown"
	case ExitTripleFault:
		return "triple-fault"
	case ExitInternalError:
		return "internal-error"
	}
	return fmt.Sprintf("exit-reason(%d)", int(r))
}

// Exit describes how a machine ended.
type Exit struct {
	Reason ExitReason
	// VCPU is the vCPU that ended the machine; -1 when none did.
	VCPU int
	// Detail says more, for ExitInternalError, ExitShutdown and ExitPanic.
	Detail string
	// Status is the byte written to the power-off switch (ExitPowerOff).
	Status uint8
	// Regs are the registers of VCPU for ExitTripleFault and
	// ExitInternalError.
	Regs *kvm.Regs
}

func (e Exit) String() string {
	s := e.Reason.String()
	if e.VCPU >= 0 {
		s += fmt.Sprintf(" on vcpu %d", e.VCPU)
	}
	if e.Reason == ExitPowerOff {
		s += fmt.Sprintf(" (status %d)", e.Status)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Regs != nil {
		s += fmt.Sprintf(" (rip %#x rsp %#x rflags %#x)", e.Regs.RIP, e.Regs.RSP, e.Regs.RFLAGS)
	}
	return s
}
