// SPDX-License-Identifier: Apache-2.0

// Package sandbox provides the sandbox runtime: sandbox configuration and
// its validation, the MSB_HOME state directory, image preparation (pull with
// pkg/oci, root filesystem with pkg/rootfs, agent initramfs with
// pkg/guestagent/bootcfg), and the sandbox process that runs one microVM
// with pkg/vmm. It is the only package that wires the pkg/ areas together.
//
// Layout of MSB_HOME (default ~/.microsandbox-go, overridden by the MSB_HOME
// environment variable):
//
//	images/                      an oci.Store
//	rootfs/<digest hex>.erofs    the read-only root of an image, built once
//	sandboxes/<name>/            one sandbox:
//	    state.json               State, replaced atomically under state.lock
//	    vm.json                  the sandbox process's VM description
//	    initramfs.cpio           msb-agent as /init plus the boot config
//	    agent.sock               Unix socket proxied to the guest agent
//	    console.log, runtime.log the guest console and the process's log
//
// Each sandbox runs in its own process: the msb binary re-executed as
// "msb __sandbox DIR" (RunProcess). That process owns the VM and serves
// agent.sock with Firecracker's hybrid vsock protocol (a client writes
// "CONNECT <port>\n"); every other process reaches the agent through it.
// An attached sandbox process gets SIGTERM when its creator dies
// (Pdeathsig) and then stops its VM; a detached one runs in its own session.
//
// Trust boundary: everything read from the guest (agent frames, console)
// and from registries is hostile; the parsing lives in pkg/guestagent and
// pkg/oci. State files under MSB_HOME are trusted as much as the user who
// owns them.
//
// Goroutines: Create starts one goroutine per sandbox process it spawns,
// which waits for the process and is joined by Stop. RunProcess runs the
// VM, the vsock Unix proxy and a signal watcher and returns after all of
// them ended.
//
// Testing: the unit tests cover configuration, layout and state without
// KVM; tests/sandbox_test.go (e2e) boots a sandbox through the SDK.
package sandbox
