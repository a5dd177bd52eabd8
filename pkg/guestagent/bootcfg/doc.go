// SPDX-License-Identifier: Apache-2.0

// Package bootcfg provides the per-boot configuration that the host hands the
// guest agent (msb-agent, PID 1): the schema (Config), its validation, the
// fixed places both sides agree on (Path in the initramfs, AgentPort on
// vsock, the power-off Status codes) and WriteInitramfs, which builds the
// per-sandbox initramfs holding the agent and the configuration.
//
// The configuration travels as JSON in the file Path of the per-sandbox
// initramfs; the payloads of root filesystem patches (file contents)
// travel beside it as files in PatchDir rather than inside the JSON. It
// describes the machine, never credentials: secrets (API keys,
// tokens, registry passwords) never go into it. The initramfs is written to
// the host's sandbox state and lies in guest RAM; the agent deletes the file
// once read, but its bytes may linger in freed guest pages, and the base
// environment it carries is visible to every exec. Secrets reach processes
// per exec, over the agent protocol, or not at all.
//
// Trust boundary: the host writes the configuration, the agent reads it. The
// agent still validates it completely (Parse rejects unknown fields, bad
// paths, addresses and sizes) so that a host bug gives a clear console
// message and a power-off with StatusBadConfig instead of a half-set-up guest.
//
// Goroutines: none. Testing: go test ./pkg/guestagent/bootcfg/ (no KVM).
package bootcfg
