// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"context"
	"fmt"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
)

// VCPUState is one vCPU as Machine.Inspect found it. It tells apart a guest
// that waits for an interrupt (halted), a guest that runs (RIP moves from
// one inspection to the next), and a host that never returns from serving
// an exit (Busy): the three ways a guest that stops answering can look.
type VCPUState struct {
	ID int
	// Busy means the vCPU did not answer in time because its thread is
	// serving an exit in this process (Serving says which) or is otherwise
	// blocked; the fields below are then zero.
	Busy    bool
	Serving kvm.ExitReason
	MP      kvm.MPState
	RIP     uint64
	RSP     uint64
	RFLAGS  uint64
	CR3     uint64
	// Err is a failed register read.
	Err error
}

func (s VCPUState) String() string {
	switch {
	case s.Busy && s.Serving != kvm.ExitUnknown:
		return fmt.Sprintf("vcpu %d: busy in the host serving %v", s.ID, s.Serving)
	case s.Busy:
		return fmt.Sprintf("vcpu %d: did not answer", s.ID)
	case s.Err != nil:
		return fmt.Sprintf("vcpu %d: %v", s.ID, s.Err)
	}
	return fmt.Sprintf("vcpu %d: %v rip %#x rsp %#x rflags %#x cr3 %#x", s.ID, s.MP, s.RIP, s.RSP, s.RFLAGS, s.CR3)
}

// inspectWait bounds how long Inspect waits for one vCPU to answer.
const inspectWait = time.Second

// Inspect takes each vCPU out of the guest for a moment, reads its state on
// its own thread and lets it go back in. It is for diagnosing a guest that
// stopped answering (a boot timeout, a stalled device) and costs each vCPU
// one exit. It returns nil when the machine is not running; a vCPU that does
// not answer within a second, or before ctx ends, is reported Busy.
func (m *Machine) Inspect(ctx context.Context) []VCPUState {
	m.inspectMu.Lock()
	defer m.inspectMu.Unlock()
	m.mu.Lock()
	vcpus := append([]*vcpu(nil), m.vcpus...)
	if len(vcpus) == 0 {
		m.mu.Unlock()
		return nil
	}
	replies := make([]chan VCPUState, len(vcpus))
	for i, v := range vcpus {
		replies[i] = make(chan VCPUState, 1)
		// A request an earlier, timed-out Inspect left is replaced.
		v.inspectMu.Lock()
		v.inspectReply = replies[i]
		v.run.SetImmediateExit(true)
		v.inspectMu.Unlock()
		if tid := v.tid.Load(); tid != 0 {
			kvm.Kick(int(tid))
		}
	}
	m.mu.Unlock()

	out := make([]VCPUState, len(vcpus))
	deadline := time.NewTimer(inspectWait)
	defer deadline.Stop()
	expired := false
	for i, v := range vcpus {
		if !expired {
			select {
			case out[i] = <-replies[i]:
				continue
			case <-deadline.C:
				expired = true
			case <-ctx.Done():
				expired = true
			}
		}
		select {
		case out[i] = <-replies[i]:
		default:
			out[i] = VCPUState{ID: v.cpu.ID, Busy: true, Serving: kvm.ExitReason(v.serving.Load())}
		}
	}
	return out
}

// answerInspect serves a pending Inspect request, on the vCPU's thread and
// outside KVM_RUN. The request and immediate_exit change together under
// inspectMu, so a request is either taken here or makes the next KVM_RUN
// return at once. Stop sets stopping before immediate_exit: reading stopping
// after the clear restores immediate_exit for a Stop that raced with it.
func (m *Machine) answerInspect(v *vcpu) {
	v.inspectMu.Lock()
	reply := v.inspectReply
	v.inspectReply = nil
	if reply != nil {
		v.run.SetImmediateExit(m.stopping.Load())
	}
	v.inspectMu.Unlock()
	if reply == nil {
		return
	}
	s := VCPUState{ID: v.cpu.ID}
	if r, err := v.cpu.Regs(); err != nil {
		s.Err = err
	} else {
		s.RIP, s.RSP, s.RFLAGS = r.RIP, r.RSP, r.RFLAGS
	}
	if sr, err := v.cpu.Sregs(); err == nil {
		s.CR3 = sr.CR3
	}
	if mp, err := v.cpu.MPState(); err == nil {
		s.MP = mp
	}
	reply <- s
}
