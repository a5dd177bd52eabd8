// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"testing"

	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm/kvmtest"
)

// TestKVMSmoke creates a VM and a vCPU on a real KVM and runs a tiny guest
// program that writes a string to an I/O port.
func TestKVMSmoke(t *testing.T) {
	vmtest.RequireKVM(t)
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	const msg = "hello from an L2 guest"
	res, err := kvmtest.Run(sys, kvmtest.PrintProgram(0x3f8, msg))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Output(0x3f8); got != msg {
		t.Fatalf("guest wrote %q to port 0x3f8, want %q", got, msg)
	}
	t.Logf("guest output on port 0x3f8: %q (%d exits)", res.Output(0x3f8), res.Exits)
}
