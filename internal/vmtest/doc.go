// SPDX-License-Identifier: Apache-2.0

// Package vmtest runs Go test binaries where a working KVM is: directly on
// the host when it has hardware virtualization ("native"), or inside an L1
// virtual machine that has one ("nested").
//
// The nested mode exists because the development and CI machines of this
// project expose a /dev/kvm that cannot run a real Linux guest (a software
// PVM backend): QEMU in software emulation (TCG) with AMD SVM emulated gives
// an L1 Linux (Debian's cloud kernel, fetched by l1.sh) whose kvm-amd module
// provides a real KVM. The harness builds an initramfs (package cpio) holding
// a small static /init (l1init), the KVM modules, the test binary and its
// files; /init runs the binary, prints its exit status on the serial console
// with a per-run nonce, and powers off. The harness streams the console live,
// returns the inner exit status, and kills QEMU when its deadline passes.
//
// Tests read the slowdown factor the harness sets (Scale) so that their
// deadlines stay bounded without flaking under emulation, and skip with a
// reason through RequireKVM where no KVM is usable.
//
// Goroutines: Run starts one console reader per QEMU process and waits for
// it before returning.
package vmtest
