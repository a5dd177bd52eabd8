// SPDX-License-Identifier: Apache-2.0

// Package vmm runs a Linux microVM on KVM: it builds the machine (guest RAM,
// in-kernel irqchip and PIT, vCPUs), boots an uncompressed vmlinux through
// PVH (or the 64-bit boot protocol) with an optional initramfs, serves the
// legacy devices (COM1 console, i8042 reset line) and virtio-mmio devices
// declared on the kernel command line, and reports how the machine ended as
// a typed Exit.
//
// Machine model: Firecracker's (one process per VM, no PCI, no ACPI, an MP
// table for SMP). Sub-packages: kvm (ioctls), memory (guest RAM),
// arch/amd64 (boot state as data), legacy/{serial,i8042}, virtio (the core
// and transport) and one package per virtio device. Devices never reach into
// the vCPU loop: the Machine routes port and MMIO exits to them through a
// bus, and they raise interrupts through callbacks the Machine wires to KVM.
//
// Trust boundary: everything the guest does (port and MMIO accesses, virtio
// queues) is hostile input, handled by the devices with bounds checks. The
// kernel image and initrd are host user input, validated by arch/amd64.
//
// Goroutines: Run starts one goroutine per vCPU, each locked to its OS
// thread for its whole life (the thread is discarded with it), and joins
// them before it returns. Stop, from any goroutine, sets immediate_exit on
// every vCPU and kicks its thread out of KVM_RUN.
//
// Testing: package tests are unit tests of the bus and configuration; booting
// the real kernel is an end-to-end test (tests/, through internal/vmtest).
package vmm
