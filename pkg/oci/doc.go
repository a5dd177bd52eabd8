// SPDX-License-Identifier: Apache-2.0

// Package oci pulls OCI and Docker images and keeps them in a
// content-addressed Store: references, pulling for a platform, auth,
// insecure registries and extra CAs, pull policies, progress, and
// list / get / remove / prune with in-use markers.
//
// References ([ParseReference]) follow Docker's normalization ("python" is
// docker.io/library/python:latest) and containers/image's transports
// ("oci:DIR[:NAME]", "oci-archive:FILE[:NAME]"). Images are exposed through
// this package's own small [Image] and [Layer] interfaces; a layer is read
// as an uncompressed tar stream ([Layer.Uncompressed]), which is what
// package rootfs builds a root filesystem from (the sandbox layer wires the
// two; neither imports the other). Transport is github.com/containers/image
// (go.podman.io/image/v5): only its docker, oci/layout and oci/archive
// transports are used, not copy or signature, so it builds with
// CGO_ENABLED=0 and no build tags. None of its types leave this package:
// its errors are classified into [ErrNotFound], [ErrUnauthorized] and
// the others with errors.Is.
//
// Spec: image-spec v1.1 (manifest, index, config, layout, descriptors),
// Docker Image Manifest V2 Schema 2 and manifest lists; Docker schema 1 is
// refused. The [Store] directory is itself an OCI image layout.
//
// Trust boundary: registries, layouts and archives are hostile. Manifests,
// indexes and configs are size-bounded and decoded by this package with
// explicit checks (decodeManifest, decodeIndex, decodeConfig); every blob's
// size and sha256 are verified before it becomes visible in the store;
// each layer's uncompressed digest is checked against the config's
// diff_ids once, at pull, and again whenever a layer stream is read to
// its end; a digest in the reference pins the manifest. Tar contents are
// not inspected here: package rootfs validates entries.
//
// Concurrency: a Store is safe for use by many goroutines and processes.
// It uses flock(2) files under DIR/locks, taken in this order: "gc"
// (shared by pulls, exclusive by garbage collection), "pull-<hash>" (one
// per reference and platform, so parallel pulls fetch once), "index"
// (index.json and in-use markers). Waits for locks are bounded by the
// context. The package starts no goroutines; containers/image may run
// short-lived ones inside a call, which end before it returns.
//
// Testing: go test ./pkg/oci/... pulls generated images
// (internal/testimages) from an in-process registry (package ocitest) over
// HTTP, HTTPS with a self-signed CA and basic auth, and from OCI layouts;
// no test reaches the internet. FuzzParseReference, FuzzDecodeManifest,
// FuzzDecodeIndex and FuzzDecodeConfig fuzz the parsers.
package oci
