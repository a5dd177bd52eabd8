// SPDX-License-Identifier: Apache-2.0

// Package poweroff is the microVM's power switch: a one-byte I/O port the
// guest writes to end the machine, with the byte as its status (as QEMU's
// isa-debug-exit device at the same port does).
//
// A microVM without ACPI has no standard power-off path: Linux's own
// poweroff ends in "Attempted to kill init" and a panic. The guest agent
// (PID 1) writes this port after it has synced and unmounted, which lets the
// VMM tell a clean power-off from a reboot (i8042 reset) and a panic.
//
// Trust boundary: the guest decides when and with which status it ends
// itself; nothing else is read. Goroutines: none.
package poweroff
