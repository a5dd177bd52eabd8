// SPDX-License-Identifier: Apache-2.0

// Package microsandbox provides the microsandbox Go SDK on a pure-Go
// microVM runtime: CreateSandbox boots a sandbox from an OCI image, Exec
// runs commands in it, Stop shuts it down. Names and behaviour follow the
// upstream SDK (github.com/superradcompany/microsandbox/sdk/go), so a user
// switches by changing the import path.
//
// The package is a thin layer over pkg/sandbox: options fill a
// SandboxConfig, the entry points validate it once and report every problem
// together, and errors from below are mapped once to *Error with an
// ErrorKind. It never touches KVM itself; each sandbox runs in its own
// process (the msb binary), found through the MSB_BIN, MSB_KERNEL and
// MSB_AGENT environment variables or next to the executable. State lives
// in MSB_HOME (default ~/.microsandbox-go).
package microsandbox
