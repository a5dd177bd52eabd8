// SPDX-License-Identifier: Apache-2.0

// Package guestagent provides the wire protocol between the host and the
// in-guest agent (msb-agent): length-prefixed protobuf frames, the version
// handshake, per-stream flow control and the error mapping shared by the host
// client (package host) and the guest server (package guest). Each binary
// links only its side; the two share nothing but this package and agentpb.
//
// Framing. A frame is a 4-byte big-endian length followed by that many bytes
// of an agentpb.Frame:
//
//	+----------------+---------------------------------------------+
//	| len (u32, BE)  | agentpb.Frame{stream, oneof msg} (len bytes) |
//	+----------------+---------------------------------------------+
//
// The receiver checks len against its maximum (DefaultMaxFrameSize unless
// configured, advertised in the hello) before it allocates anything.
//
// Streams. Stream 0 carries the hello. The host opens every other stream
// with an open message (exec, fs, metrics_request) under a new id greater than
// all ids it used before, so many execs and file transfers share one
// connection. The guest ends each stream with exactly one terminal frame
// (exit, error, fs_result or metrics); the host frees the id when that frame
// arrives. Frames for an unknown id are a protocol error on the host; on the
// guest, frames for ids it has already finished are dropped (they crossed its
// terminal frame on the wire) and frames for ids never opened are a protocol
// error.
//
// Flow control. Each stream has one window per direction, InitialWindow bytes
// at open. A sender may only send Data (and, guest to host, FsEntries, counted
// by encoded size) within the credit the receiver granted; the receiver
// grants more with WindowUpdate as its consumer takes the bytes. A receiver
// treats data beyond the window as a protocol error, so the memory a peer can
// make the other side hold is bounded by InitialWindow per stream and the
// number of streams. Control frames are small and are applied on arrival
// without queueing, and no frame reader ever waits on a write, so the two
// directions cannot deadlock. Nothing caps the total size of an output or a
// file.
//
// Versioning. The host sends Hello{min, max version, capabilities, max
// frame}; the guest answers with the highest version both ranges contain and
// the intersection of the capabilities, so a newer host talks to an older
// guest (and back) at the older version. Disjoint ranges give a
// *VersionError that matches ErrIncompatible. The framing and fields 1-3 of
// Frame never change.
//
// Trust boundary: the guest is hostile to the host and host bytes are
// untrusted by the guest. Everything in this package that decodes bytes
// (FrameReader, Negotiate, CheckReply, ErrorFromProto) validates lengths,
// counts and ranges and reports violations as errors matching ErrProtocol;
// it never panics on input.
//
// Goroutines: this package starts none. FrameWriter serialises concurrent
// writers; FrameReader is for one reading goroutine.
package guestagent
