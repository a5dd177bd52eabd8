// SPDX-License-Identifier: Apache-2.0

// Package cpio writes cpio archives in the "newc" format (SVR4, no CRC), the
// format the Linux kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst).
//
// It only writes: archives are built by the host from trusted inputs (the
// agent binary, test binaries), so there is no reader to harden.
package cpio
