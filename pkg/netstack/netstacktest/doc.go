// SPDX-License-Identifier: Apache-2.0

// Package netstacktest provides an in-process guest for testing package
// netstack without a VM: a second gVisor stack, configured like a guest
// kernel with the static sandbox addresses, wired frame to frame to a
// netstack.Stack.
//
// Goroutines: a Guest owns one frame pump, started by Connect and joined
// by Close.
package netstacktest
