// SPDX-License-Identifier: Apache-2.0

package kvm

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlPtr issues an ioctl whose argument is a pointer to a structure.
func ioctlPtr[T any](fd int, req uintptr, arg *T) error {
	_, err := ioctlPtrN(fd, req, arg)
	return err
}

// ioctlPtrN is ioctlPtr for requests whose result is a count. EINTR is
// retried: no pointer request is KVM_RUN (see ioctl).
func ioctlPtrN[T any](fd int, req uintptr, arg *T) (int, error) {
	for {
		// SAFETY: arg points to a Go value whose layout matches the kernel
		// structure named by req (sizes checked in the tests); the pointer
		// is converted in the call expression, so the value stays live and
		// unmoved for the duration of the syscall, and the kernel keeps no
		// reference.
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(arg)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, os.NewSyscallError("ioctl", errno)
		}
		return int(r), nil
	}
}

// HostAddr returns the host virtual address of b's first byte, for
// UserMemoryRegion.UserspaceAddr. b must stay mapped while the slot exists.
func HostAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	// SAFETY: only the address is taken; b is an mmap'd region the caller
	// keeps mapped (and so unmoved) for as long as KVM uses the slot.
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}
