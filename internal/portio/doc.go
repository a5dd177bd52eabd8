// SPDX-License-Identifier: Apache-2.0

// Package portio lets a guest program write x86 I/O ports (after ioperm),
// for the few VMM devices a guest pokes directly, such as the power-off
// switch. It is linux/amd64 only and uses a Go assembly stub, not cgo.
package portio
