// SPDX-License-Identifier: Apache-2.0

// Package host provides the host's side of the guest agent protocol: a
// Client that runs processes, file operations and metrics in a guest over
// one stream connection (the sandbox's vsock relay, or any net.Conn).
//
// Trust boundary: the guest is hostile. Every frame from it is validated
// (package guestagent): frame sizes before allocation, stream ids, channels,
// windows, version and capability lists; text in its errors is sanitised. A
// violation closes the connection with an error matching
// guestagent.ErrProtocol; the guest can make the client hold at most
// guestagent.InitialWindow bytes per open stream.
//
// Goroutines: Dial starts one frame reader, stopped and joined by Close. An
// Exec with StdinBytes starts one stdin feeder, ended when the process's
// stream ends or the Process is closed, and joined by Process.Close (and by
// Client.Close for processes never closed). All other calls run in their
// caller's goroutine and are bounded by their context.
//
// Lock order: Client.mu before stream.mu.
package host
