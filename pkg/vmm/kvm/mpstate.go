// SPDX-License-Identifier: Apache-2.0

package kvm

import (
	"encoding/binary"
	"fmt"
)

// MPState is a vCPU's multiprocessing state (struct kvm_mp_state): whether
// it can run, waits for an interrupt, or has not been started.
type MPState uint32

// The states x86 vCPUs report (KVM_MP_STATE_*).
const (
	MPStateRunnable      MPState = 0
	MPStateUninitialized MPState = 1 // an AP before its INIT/SIPI
	MPStateInitReceived  MPState = 2
	MPStateHalted        MPState = 3 // in HLT, waiting for an interrupt
	MPStateSIPIReceived  MPState = 4
)

func (s MPState) String() string {
	switch s {
	case MPStateRunnable:
		return "runnable"
	case MPStateUninitialized:
		return "uninitialized"
	case MPStateInitReceived:
		return "init-received"
	case MPStateHalted:
		return "halted"
	case MPStateSIPIReceived:
		return "sipi-received"
	}
	return fmt.Sprintf("mp-state(%d)", uint32(s))
}

// MPState reads the vCPU's multiprocessing state. Like every vCPU request
// it waits while another thread is inside KVM_RUN on this vCPU.
func (c *VCPU) MPState() (MPState, error) {
	var b [4]byte
	if err := ioctlPtr(c.fd, ioctlGetMPState, &b); err != nil {
		return 0, fmt.Errorf("kvm: get mp state of vcpu %d: %w", c.ID, err)
	}
	return MPState(binary.LittleEndian.Uint32(b[:])), nil
}
