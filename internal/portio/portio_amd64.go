// SPDX-License-Identifier: Apache-2.0

//go:build linux

package portio

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// outb writes val to port; the caller must hold access to the port.
func outb(port uint16, val uint8)

// WriteByte gains access to port (ioperm; needs CAP_SYS_RAWIO) and writes
// val to it.
func WriteByte(port uint16, val uint8) error {
	// ioperm grants access to the calling thread only: the goroutine must
	// not move to another thread between the grant and the OUT, or the OUT
	// faults (#GP, a SIGSEGV with code SI_KERNEL).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(int(port), 1, 1); err != nil {
		return fmt.Errorf("portio: ioperm %#x: %w", port, err)
	}
	outb(port, val)
	return nil
}
