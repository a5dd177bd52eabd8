// SPDX-License-Identifier: Apache-2.0

// Package guest provides the agent's side of the guest agent protocol: a
// Server that answers a host over any stream connection (virtio-vsock in the
// guest, a socket pair in tests) and runs processes, file operations and
// metrics for it.
//
// Trust boundary: every frame comes from the host and is validated (see
// package guestagent): stream ids, windows, channels, paths (absolute, no
// NUL), signals, sizes. A violation closes the connection; it never panics
// the agent. Processes run with the credentials the request names, resolved
// in Config.Root's etc/passwd and etc/group.
//
// Goroutines: ServeConn runs the frame reader in its caller's goroutine and
// starts one goroutine per open stream; an exec stream adds one output pump
// per output (stdout, stderr, or the pty), a stdin feeder when stdin is a
// pipe, and a timer for its timeout. All of them are joined before ServeConn
// returns. When the connection ends, processes it started are killed (their
// whole process group, SIGKILL) and reaped. Serve runs one ServeConn per
// accepted connection and joins them before it returns.
//
// Reaping: each exec waits for its own child (waitid on its pid), keeping the
// zombie until its output is drained so signals to its process group cannot
// hit a recycled pid. Orphans re-parented to the agent (when it is PID 1) are
// the caller's to reap; a PID-1 reaper must use waitid(P_ALL, WEXITED|WNOWAIT)
// style peeking, or hold off, so it does not steal these children.
//
// Lock order: conn.mu before stream.mu; proc.mu is a leaf.
//
// Testing: the tests run the server in-process over a Unix socket pair and
// drive it with package host, running real processes; user switching and
// rlimits need root and skip without it.
package guest
