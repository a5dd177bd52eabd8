// SPDX-License-Identifier: Apache-2.0

// Package l1config is the contract between the nested test harness and the
// /init it puts in the L1 VM: where the run configuration lies, what it
// holds, and the console line that reports the exit status.
package l1config
