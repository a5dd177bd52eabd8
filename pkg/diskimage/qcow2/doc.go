// SPDX-License-Identifier: Apache-2.0

// Package qcow2 parses qcow2 disk image files and serves them as a flat
// block device: an [Image] is an io.ReaderAt and io.WriterAt over the
// virtual disk, with Sync and Close. It knows nothing of virtio; package
// blk (pkg/vmm/virtio/blk) serves any such backend to a guest.
//
// Specification: the qcow2 format of docs/interop/qcow2.txt in the QEMU
// tree (format.go has the layouts). Supported: versions 2 and 3, cluster
// sizes of 512 bytes to 2 MiB, the active L1/L2 tables, unallocated
// clusters and version 3 zero clusters (read as zeros), deflate-compressed
// clusters (read; a write copies the cluster into a new uncompressed one),
// and 16-bit refcounts, which writes keep exact so that qemu-img check
// finds no errors or leaks. Read-only images may also have other refcount
// widths, internal snapshots (the active state is served) and the dirty
// bit. Refused, with errors that match [ErrUnsupported] and say how to
// convert the image: backing files, encryption, external data files,
// extended L2 entries, compression other than deflate, and unknown
// incompatible features. An image QEMU marked corrupt is refused with
// [ErrMarkedCorrupt].
//
// Trust boundary: the image file is untrusted (users mount images they
// downloaded). Every header field, table offset and table entry is checked
// before use against the format, the file size and the virtual size, with
// overflow-safe arithmetic; Open checks the header, the L1 table and, for
// writing, the refcount table and that no two metadata structures share a
// cluster, and ReadAt and WriteAt check each L2 entry they use. A bad one
// is an error wrapping [ErrCorrupt], never a panic or a read outside the
// file. Memory is bounded: the virtual size is at most 64 TiB, the L1
// table 32 MiB and the refcount table 8 MiB, tables are read only when
// they lie inside the file, compressed input is bounded by the descriptor
// (at most two clusters), and the L2 tables cached total 8 MiB (at
// least 8 and at most 1024 tables). Guest data is never written over a
// metadata cluster, even when a hostile L2 entry maps it there.
//
// Writes: clusters are allocated only at the end of the file, never
// reused. A write inside an allocated cluster whose refcount is one goes
// in place. Any other is copied on write, and the metadata is ordered so
// that a crash, of the process or of the host, can leak clusters but
// never leave a table pointing at unwritten data or an uncounted cluster:
// the data cluster and its refcount are written first; the L2 entry
// changes only in the cache, and reaches the file at Sync, Close, or when
// the cache fills up, after a sync; new L2 tables are written, and synced,
// before L1 points at them; refcounts of replaced clusters drop only after
// the new mapping is on disk. Refcount blocks and a larger refcount table
// are likewise written and synced before anything points at them. After a
// crash, qemu-img check -r leaks reclaims the space.
//
// Goroutines: none. ReadAt is safe for concurrent use; WriteAt, Sync and
// Close take the image's lock exclusively (lock order: Image.mu, then the
// cache's lock).
//
// Testing: go test ./pkg/diskimage/qcow2/ compares reads and writes with
// images made and checked by qemu-img (tests skip without it) and opens
// hostile images built in the tests. TestCrashConsistency records the file
// writes of a workload and replays prefixes of them (a process crash) and
// random subsets of the writes after a sync (a host crash); qemu-img check
// must find at most leaks in each. FuzzOpen opens arbitrary bytes, reads
// and writes them; run it with
// go test -run='^$' -fuzz=FuzzOpen ./pkg/diskimage/qcow2/.
package qcow2
