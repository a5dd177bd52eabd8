// SPDX-License-Identifier: Apache-2.0

package vmm_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
)

// TestInspect runs a guest that spins on one instruction and another that
// halts with interrupts off, and checks that Inspect reports each vCPU where
// it is, twice in a row, without ending the machine; an AP nobody started
// is reported uninitialized.
func TestInspect(t *testing.T) {
	requireKVM(t)
	for _, c := range []struct {
		name string
		tail []byte
		want kvm.MPState
	}{
		{"spin", spin, kvm.MPStateRunnable},
		{"halt", []byte{0xFA, 0xF4}, kvm.MPStateHalted}, // cli; hlt
	} {
		t.Run(c.name, func(t *testing.T) {
			head := code(comPort, puts("in\n"))
			body := code(head, c.tail)
			last := uint64(loadAddr + len(body))
			var out syncBuffer
			m, err := vmm.New(vmm.Config{Kernel: tinyKernel(t, body), MemoryMiB: 32, VCPUs: 2, Console: &out})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ended := make(chan vmm.Exit, 1)
			go func() {
				exit, err := m.Run(ctx)
				if err != nil {
					t.Error(err)
				}
				ended <- exit
			}()
			for !strings.Contains(out.String(), "in\n") {
				select {
				case exit := <-ended:
					t.Fatalf("machine ended before its first line: %v", exit)
				case <-time.After(10 * time.Millisecond):
				}
			}
			for range 2 {
				// The console line comes before the last instructions:
				// let vCPU 0 reach them.
				deadline := time.Now().Add(10 * time.Second)
				var got []vmm.VCPUState
				for {
					got = m.Inspect(ctx)
					if len(got) == 2 && got[0].MP == c.want && got[0].RIP >= last-uint64(len(c.tail)) || time.Now().After(deadline) {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				if len(got) != 2 {
					t.Fatalf("Inspect returned %d states, want 2: %v", len(got), got)
				}
				bsp, ap := got[0], got[1]
				if bsp.Busy || bsp.Err != nil || bsp.MP != c.want || bsp.RIP < last-uint64(len(c.tail)) || bsp.RIP > last {
					t.Errorf("vcpu 0 = %v; want %v with rip in [%#x, %#x]", bsp, c.want, last-uint64(len(c.tail)), last)
				}
				if ap.ID != 1 || ap.Busy || ap.MP != kvm.MPStateUninitialized {
					t.Errorf("vcpu 1 = %v; want uninitialized", ap)
				}
			}
			select {
			case exit := <-ended:
				t.Fatalf("machine ended after Inspect: %v", exit)
			default:
			}
			m.Stop()
			select {
			case exit := <-ended:
				if exit.Reason != vmm.ExitStopped {
					t.Errorf("exit = %v, want stopped", exit)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Stop after Inspect did not end the machine")
			}
			if got := m.Inspect(ctx); got != nil {
				t.Errorf("Inspect after the end = %v, want nil", got)
			}
		})
	}
}
