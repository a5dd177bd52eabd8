// SPDX-License-Identifier: Apache-2.0

// Package p9 provides a virtio 9P transport device (virtio-9p, device ID
// 9) that shares one host directory with the guest through a 9P2000.L
// server, github.com/hugelgupf/p9 with its localfs backend.
//
// It exists as the measured peer of package fs for the file-sharing
// decision of issue #8 (tests/sharebench boots one guest with both and
// times the same workload on each); sandboxes do not use it and
// pkg/sandbox does not wire it. It is NOT confined like package fuse:
// localfs resolves the guest's names with the host's ordinary path rules,
// so a symbolic link inside the share, or a name the server does not
// reject, reaches outside it. Attaching also sets the process umask to 0
// (localfs does so on every Tattach). Only serve a directory the host
// process could hand to the guest wholesale.
//
// What it owns: the device model (the configuration space of Linux's
// include/uapi/linux/virtio_9p.h, a u16 tag length then the tag;
// VIRTIO_9P_MOUNT_TAG; one request queue) and the bridge between chains
// and the server's byte stream. Each chain carries one 9P message
// (size[4] type[1] tag[2] body) in its readable part and receives the
// reply in its writable part. The device writes the message into an
// in-memory stream (net.Pipe) that the server serves, keeps the chain
// pending under its tag, and a reader goroutine matches each framed
// reply to its chain by tag, in whatever order the server answers.
//
// Trust boundary: chains are walked by [virtio.Queue], which checks them
// against guest RAM. The device copies a message's header and fixed part
// (up to 4 KiB) before checking it, so the server parses the bytes that
// were checked, and streams the rest (a Twrite payload) from the chain's
// buffers. It refuses, returning the chain unused and counting it: a
// message shorter than its header, a size field beyond the readable part
// or above the negotiated msize, a chain with no room for a reply header,
// and a tag already pending. It lowers a Tversion's msize to
// MaxMessageSize and learns the negotiated msize from the Rversion. A
// reply longer than msize or than its chain's writable space completes
// the chain with no bytes; a reply whose tag no request holds is dropped.
// What is inside a message is checked by the server. A malformed message
// the server cannot frame is answered under NOTAG, so its chain stays
// pending until the driver resets the device.
//
// Goroutines: each activation starts a session with the server's
// connection handler (the p9 server adds one per request in flight and
// waits for them before the handler returns) and the reply reader. Reset
// and Close end the session by closing the stream and wait for both;
// p9's receive loop can leave one goroutine that exits by itself right
// after. That loop calls WaitGroup.Add in a goroutine it spawns after
// each message, so a session closed within microseconds of a request
// races with the handler's Wait (the race detector reports it; the late
// goroutine only sees the closed stream and returns). Requests are
// forwarded synchronously inside QueueNotify under the device's mutex;
// the reader takes the mutex to complete a chain, and interrupts are
// signalled after it is released.
//
// Testing: go test ./pkg/vmm/virtio/p9/ drives the device through the
// virtio-mmio transport with the fake guest of package virtiotest
// (Tversion, Tattach, Twalk, Tgetattr, Tlopen, Tread, malformed chains,
// reset and goroutine counts); tests/sharebench mounts it in a guest.
package p9
