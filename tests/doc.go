// SPDX-License-Identifier: Apache-2.0

// Package tests holds the end-to-end tests: real KVM, real kernel, through
// the public API. They build only with the e2e tag and run through the
// harness in internal/vmtest (natively with hardware KVM, else in the nested
// L1 VM): make e2e.
package tests
