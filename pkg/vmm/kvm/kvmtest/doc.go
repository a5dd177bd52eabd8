// SPDX-License-Identifier: Apache-2.0

// Package kvmtest runs tiny real-mode guest programs on KVM for tests: the
// smallest proof that a VM can be created, entered and exited, used by the
// unit tests of package kvm and by the nested end-to-end smoke test.
package kvmtest
