// SPDX-License-Identifier: Apache-2.0

// Package memory provides guest RAM: one or more regions of guest-physical
// address space, each backed by host memory, with bounds-checked access by
// [GuestAddr].
//
// Trust boundary: every guest-physical address and length that reaches this
// package may come from the guest (virtqueue descriptors, device registers)
// and is hostile. All accessors check that the whole range lies inside a
// single region with overflow-safe arithmetic and return an error wrapping
// [ErrOutOfBounds] otherwise; no input makes them panic or touch host memory
// outside guest RAM. Accesses never span two regions, even adjacent ones.
//
// The backing memory is shared with running vCPUs, so bytes read through a
// [Memory] may change at any time. Callers copy what they validate before
// they rely on it.
//
// Goroutines: none. A [Memory] is immutable after construction except for the
// bytes it holds; its methods are safe for concurrent use until [Memory.Close].
//
// All use of package unsafe (taking the host address of a region for
// KVM_SET_USER_MEMORY_REGION) lives in memory_unsafe.go.
//
// Testing: [NewFromBytes] builds a Memory over ordinary Go slices, so the
// package and its users test without mmap or KVM: go test ./pkg/vmm/memory/.
package memory
