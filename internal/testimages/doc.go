// SPDX-License-Identifier: Apache-2.0

// Package testimages builds the OCI image layouts that tests pull: a
// busybox image made from Debian's busybox-static package, a python image
// (a minimal Debian with python3) made by debootstrap, and small
// multi-layer images with whiteouts, opaque directories, hard links,
// symlinks, a device node and a fifo for root filesystem conversion tests.
//
// Layers are written in Go with archive/tar: ownership, modes and types
// come from the headers the code writes, never from the host filesystem,
// so no root is needed and nothing is staged on disk. Output is
// deterministic (fixed mtimes, gzip without timestamps), and each layout
// is cached under $XDG_CACHE_HOME/microsandbox-go/testimages (os.UserCacheDir)
// in a directory named by a hash of its inputs (the builder version and,
// for busybox, the SHA256 of the .deb apt would download).
//
// The python image is different: debootstrap --variant=minbase with
// python3 and python-is-python3 builds a Debian tree on disk, and PackTree packs it
// with the owners and modes lstat reports, so it needs root; its cache key
// is the package versions apt and dpkg report (see Python).
//
// Inputs: busybox needs apt-get and dpkg-deb and a configured Debian
// archive (the only network the tests use); python needs debootstrap,
// root and the same archive; the other images need nothing.
//
// Goroutines: none. Functions may be called from parallel tests and
// processes: a layout is built in a temporary directory and renamed into
// place.
//
// Testing: go test ./internal/testimages builds the images, serves them
// from an in-process registry (package ocitest), pulls them with package
// oci and converts busybox to an EROFS image with package rootfs.
package testimages
