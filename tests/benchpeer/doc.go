// SPDX-License-Identifier: Apache-2.0

// Package benchpeer holds what the in-harness benchmarks share: the QEMU
// microvm peer (run from a sysroot the harness carries into the L1 VM) and
// the one-file initramfs that boots tests/guestinit. It is test code only;
// nothing in the product imports it.
package benchpeer
