// SPDX-License-Identifier: Apache-2.0

package amd64

import "errors"

// Sentinel errors. Functions wrap them with details (addresses, sizes), so
// callers branch with errors.Is and never compare strings.
var (
	// ErrInvalidKernel reports a kernel image that is not a well-formed
	// 64-bit x86 ELF executable (bad header, truncated segment, malformed
	// note, absurd size).
	ErrInvalidKernel = errors.New("amd64: invalid kernel image")

	// ErrKernelPlacement reports a well-formed kernel whose segments or entry
	// points fall outside guest RAM, into the reserved low megabyte, into the
	// 32-bit MMIO gap, or onto each other.
	ErrKernelPlacement = errors.New("amd64: kernel does not fit the memory map")

	// ErrNoPVHNote reports a kernel without the Xen PVH entry note
	// (XEN_ELFNOTE_PHYS32_ENTRY); such a kernel can still be booted with the
	// Linux 64-bit boot protocol.
	ErrNoPVHNote = errors.New("amd64: kernel has no PVH entry note")

	// ErrInvalidConfig reports a boot configuration outside the supported
	// range: RAM size, vCPU count or index, command line, initrd.
	ErrInvalidConfig = errors.New("amd64: invalid boot configuration")
)
