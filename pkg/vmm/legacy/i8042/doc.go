// SPDX-License-Identifier: Apache-2.0

// Package i8042 emulates the one part of the PS/2 keyboard controller a
// microVM needs: the CPU reset line. A guest reboots by writing the "pulse
// output line" command 0xFE to the command port (Linux: reboot=k), which the
// device turns into a reset request; everything else reads as an idle
// controller with no data.
//
// Trust boundary: accesses come from the guest; anything but a one-byte
// access is ignored. Goroutines: none.
package i8042
