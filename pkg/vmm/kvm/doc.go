// SPDX-License-Identifier: Apache-2.0

// Package kvm wraps the Linux KVM API (/dev/kvm ioctls) for the VMM: the
// system handle, VMs, guest memory slots, vCPUs and the shared kvm_run page.
//
// It holds ioctl wrappers and the kvm_run decoding only: no device models, no
// boot logic, no goroutines. Constants and structure layouts follow
// include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (Linux 6.x).
//
// Trust boundary: the kvm_run page is written by the kernel on behalf of the
// guest. Exit data read from it (port numbers, sizes, data offsets, MMIO
// addresses) is bounds-checked against the mapping before use.
//
// Testing: the tests run tiny real-mode guest programs and need a usable
// /dev/kvm; they skip, saying why, where there is none.
package kvm
