// SPDX-License-Identifier: Apache-2.0

// Package fs provides a virtio file system device (virtio-fs) that shares
// one host directory with the guest, served in Go by package fuse.
//
// What it owns: the device model (device ID 26, the configuration space of
// virtio 1.2 §5.11.4 with the mount tag and the number of request queues,
// one hiprio queue and 1 to MaxRequestQueues request queues) and moving
// each request's bytes from a descriptor chain to the FUSE server and the
// reply back. It owns the server it creates from Config.Share and closes
// it with the device. What it must not touch: any host file outside the
// shared directory (package fuse confines every access beneath it), the
// transport (it sees only queues, guest memory through them, and an
// Interrupt), and the sandbox's wiring: pkg/sandbox decides what to share,
// under which tag and whether read-only.
//
// Why virtio-fs and not virtio-9p: Linux's virtiofs driver speaks FUSE
// directly over the virtqueue, so the guest kernel's mature FUSE client
// (page cache, readdirplus, attribute and entry caching with timeouts the
// server chooses, and DAX windows as a later option) does the guest-side
// work, and the host needs only a FUSE server, which is small and
// testable without a VM. 9p2000.L's Linux client spends separate round
// trips on walk, getattr and open where FUSE answers a LOOKUP with the
// attributes (and READDIRPLUS returns them for a whole directory), and it
// splits every transfer at msize (128 KiB by default in current Linux,
// 8 KiB before 5.15) where this server takes 1 MiB READs and WRITEs; its
// cache modes trade coherence for speed more bluntly than FUSE's
// timeouts.
//
// Measured (tests/sharebench, make bench: each device in a machine of its
// own over a host temp dir, same kernel and initramfs, guest clock, caches
// dropped before stat and read; the guest creates 1,000 files, then walks
// and lstats the -files files the host wrote, 100 a directory; 9p mounted
// trans=virtio,version=9p2000.L,msize=262144 and served by package p9,
// github.com/hugelgupf/p9's localfs; inside the emulated nested harness,
// so absolute times are 10-50x a real host's), 2026-11-26:
//
//	                           virtio-fs   virtio-9p   fs/9p
//	create 1,000 files         6.69 s      18.33 s     0.37
//	find + lstat 2,000 files   2.03 s      32.56 s     0.06
//	write 64 MiB + fsync       1.86 s      21.39 s     0.09
//	read 64 MiB                0.90 s      16.15 s     0.06
//
// (virtio-fs 10,331 requests, 9p 75,682.) At the sizes virtio-fs
// ran the whole workload in one boot: create 1,000 files 5.30 s, find +
// lstat 10,000 files 9.10 s, write 1 GiB + fsync 30.66 s (33 MiB/s), read
// 1 GiB 12.50 s (82 MiB/s); 9p created its 1,000 files in 17.78 s (0.30)
// and then never got through the stat of 10,000: three boots ended within
// 10 s of starting it in a guest triple fault, and a fourth hung holding
// L1's registers (the harness's exchange of L1 and L2 state,
// internal/vmtest/doc.go, whose odds grow with the exits a run makes; 9p
// makes about seven times as many requests as virtio-fs for the same
// work). make bench runs the full sizes where hardware KVM runs the guests
// (no emulated nested SVM), and the sizes of the table in the harness.
//
// virtio-fs wins every phase, most where the guest asks most (cold stat:
// 9p walks and getattrs each name where FUSE's READDIRPLUS and LOOKUP
// carry attributes), and keeps our confined server (package fuse) where
// localfs follows host paths. Part of the bulk gap is the 9p peer's
// implementation (each message is copied into the server's buffer and
// allocated anew, where package fs moves READ and WRITE payloads between
// guest buffers and the file with preadv and pwritev), so the bulk ratios
// bound the implementations we have rather than the protocols; the
// metadata ratio is the protocol's round trips. Hence virtio-fs, and
// virtio-9p is not wired into sandboxes.
//
// Trust boundary: chains are walked by [virtio.Queue], which checks them
// against guest RAM. The device copies the start of each request (at most
// fuse.HeadSize bytes: everything but a WRITE payload) before the server
// parses it, so the guest cannot change a request while it is checked;
// READ and WRITE payloads move directly between the chain's buffers and
// the host file (preadv, pwritev), and every reply is capped to the
// chain's writable space. Everything inside the request is checked by
// package fuse. A chain with no writable space gets no reply (FORGET is such a
// request, on the hiprio queue). Bad chains are returned unused and
// counted; a broken queue sets DEVICE_NEEDS_RESET. One notification serves
// at most maxChainsPerNotify chains. Nothing the guest sends panics the
// device.
//
// Goroutines: none. Requests are served synchronously inside QueueNotify,
// one at a time under the device's mutex, so Reset and Close wait for a
// request in progress. Interrupts are signalled after the mutex is
// released. The request head and reply scratch buffers (8 KiB and 1 MiB)
// are allocated on the first request.
//
// Testing: go test ./pkg/vmm/virtio/fs/... drives the device through the
// virtio-mmio transport with the fake guest of package virtiotest (INIT,
// LOOKUP, READ, FORGET on the hiprio queue, malformed chains); package
// fuse tests the server as a hostile client, and with the host kernel's
// own FUSE client where /dev/fuse opens. Guests mount it end to end in
// tests/volume_test.go and tests/python_test.go (bind and named mounts
// through the SDK); tests/sharebench and tests/sdkbench measure it.
package fs
