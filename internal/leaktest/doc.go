// SPDX-License-Identifier: Apache-2.0

// Package leaktest finds goroutines that outlive the code that started
// them, for tests of packages that own goroutines: a TestMain that fails the
// run when any of this module's goroutines are left, and the counting and
// waiting it is built on. Only goroutines running this module's code count,
// so the runtime's and the test framework's do not.
package leaktest
