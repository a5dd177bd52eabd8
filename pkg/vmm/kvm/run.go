// SPDX-License-Identifier: Apache-2.0

package kvm

import (
	"encoding/binary"
	"fmt"
)

// ExitReason is kvm_run.exit_reason (KVM_EXIT_* in kvm.h).
type ExitReason uint32

// Exit reasons the VMM handles.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "unknown", ExitException: "exception", ExitIO: "io",
	ExitHypercall: "hypercall", ExitDebug: "debug", ExitHLT: "hlt",
	ExitMMIO: "mmio", ExitIRQWindowOpen: "irq-window-open",
	ExitShutdown: "shutdown", ExitFailEntry: "fail-entry", ExitIntr: "intr",
	ExitInternalError: "internal-error", ExitSystemEvent: "system-event",
}

func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return n
	}
	return fmt.Sprintf("exit(%d)", uint32(r))
}

// kvm_run layout (struct kvm_run in kvm.h): the fixed header, then a union
// of per-exit structures at offset 32.
//
//	0  request_interrupt_window u8
//	1  immediate_exit           u8
//	8  exit_reason              u32
//	12 ready_for_interrupt_injection u8, if_flag u8, flags u16
//	16 cr8 u64, 24 apic_base u64
//	32 union { io, mmio, internal, system_event, ... }
const (
	runImmediateExit = 1
	runExitReason    = 8
	runUnion         = 32
)

// IO directions (KVM_EXIT_IO_IN / KVM_EXIT_IO_OUT).
const (
	IOIn  = 0
	IOOut = 1
)

// RunData is a vCPU's kvm_run page: shared with the kernel, valid until the
// next Run of the same vCPU.
type RunData struct {
	b []byte
}

// Reason returns the exit reason of the last Run.
func (r *RunData) Reason() ExitReason {
	return ExitReason(binary.LittleEndian.Uint32(r.b[runExitReason:]))
}

// SetImmediateExit sets or clears immediate_exit: while set, KVM_RUN returns
// EINTR at once instead of entering the guest (how another thread stops a
// vCPU without a race).
func (r *RunData) SetImmediateExit(on bool) {
	var v byte
	if on {
		v = 1
	}
	r.b[runImmediateExit] = v
}

// IO decodes a KVM_EXIT_IO exit: direction, port, access size, and the data
// buffer (size*count bytes inside kvm_run, one access after another: a
// string instruction does several) to read (out) or fill (in). The offset
// and length come from the kernel on the guest's behalf and are checked
// against the mapping.
func (r *RunData) IO() (dir uint8, port uint16, size int, data []byte, err error) {
	u := r.b[runUnion:]
	dir = u[0]
	sz := u[1]
	port = binary.LittleEndian.Uint16(u[2:])
	count := binary.LittleEndian.Uint32(u[4:])
	off := binary.LittleEndian.Uint64(u[8:])
	n := uint64(sz) * uint64(count)
	if off > uint64(len(r.b)) || n > uint64(len(r.b))-off {
		return 0, 0, 0, nil, fmt.Errorf("kvm: io exit data [%#x+%d] outside kvm_run (%d bytes)", off, n, len(r.b))
	}
	if sz == 0 {
		return 0, 0, 0, nil, fmt.Errorf("kvm: io exit of size 0 at port %#x", port)
	}
	return dir, port, int(sz), r.b[off : off+n], nil
}

// MMIO decodes a KVM_EXIT_MMIO exit: guest physical address, the data bytes
// (to read on a write, to fill on a read) and whether the guest writes.
func (r *RunData) MMIO() (addr uint64, data []byte, isWrite bool, err error) {
	u := r.b[runUnion:]
	addr = binary.LittleEndian.Uint64(u[0:])
	n := binary.LittleEndian.Uint32(u[16:])
	if n > 8 {
		return 0, nil, false, fmt.Errorf("kvm: mmio exit length %d > 8", n)
	}
	return addr, u[8 : 8+n], u[20] != 0, nil
}

// InternalError decodes KVM_EXIT_INTERNAL_ERROR: the suberror and its data
// words (at most 16, as kvm.h defines).
func (r *RunData) InternalError() (suberror uint32, data []uint64) {
	u := r.b[runUnion:]
	suberror = binary.LittleEndian.Uint32(u[0:])
	n := min(binary.LittleEndian.Uint32(u[4:]), 16)
	for i := range n {
		data = append(data, binary.LittleEndian.Uint64(u[8+8*i:]))
	}
	return suberror, data
}

// FailEntry decodes KVM_EXIT_FAIL_ENTRY: the hardware entry failure reason.
func (r *RunData) FailEntry() uint64 {
	return binary.LittleEndian.Uint64(r.b[runUnion:])
}

// SystemEvent decodes KVM_EXIT_SYSTEM_EVENT: the event type
// (KVM_SYSTEM_EVENT_SHUTDOWN = 1, RESET = 2, CRASH = 3).
func (r *RunData) SystemEvent() uint32 {
	return binary.LittleEndian.Uint32(r.b[runUnion:])
}
