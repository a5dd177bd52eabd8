// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"go.podman.io/image/v5/pkg/compression"
)

// Platform names an OS, CPU architecture and optional variant, as in an
// image index entry (image-spec image-index.md).
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// DefaultPlatform is linux on the host's architecture: the guest runs on
// the host CPU.
func DefaultPlatform() Platform {
	return Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// ParsePlatform parses "os/arch[/variant]", e.g. "linux/arm64".
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Platform{}, fmt.Errorf("oci: platform %q: want os/arch[/variant]", truncate(s))
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// String returns "os/arch" or "os/arch/variant".
func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func (p Platform) orDefault() Platform {
	if p.OS == "" && p.Architecture == "" {
		return DefaultPlatform()
	}
	if p.OS == "" {
		p.OS = "linux"
	}
	return p
}

// matches reports whether an image of platform got serves a request for p.
func (p Platform) matches(got Platform) bool {
	return p.OS == got.OS && p.Architecture == got.Architecture &&
		(p.Variant == "" || got.Variant == "" || p.Variant == got.Variant)
}

// Image is an image in the store. Its bytes were verified against their
// digests when they were stored.
type Image interface {
	// Reference is the reference the image was stored under, in canonical
	// form ("docker.io/library/python:latest").
	Reference() string
	// Digest is the digest of the image manifest (for a multi-platform
	// image, the manifest of the chosen platform).
	Digest() Digest
	// Platform is the platform of the image.
	Platform() Platform
	// Config is the runtime configuration (Env, Cmd, Entrypoint, ...).
	Config() ImageConfig
	// Created is the creation time recorded in the config; zero if none.
	Created() time.Time
	// Layers are the layers, bottom first.
	Layers() []Layer
	// Size is the total size in bytes of manifest, config and compressed
	// layers.
	Size() int64
}

// Layer is one layer of an Image.
type Layer interface {
	// Digest is the digest of the layer blob as stored (compressed).
	Digest() Digest
	// DiffID is the digest of the uncompressed tar (config rootfs.diff_ids).
	DiffID() Digest
	// Size is the size of the blob in bytes.
	Size() int64
	// MediaType is the layer's media type.
	MediaType() string
	// Uncompressed opens the layer as an uncompressed tar stream. The
	// stream checks the DiffID: if it is read to EOF and the content does
	// not match, the final Read returns an error wrapping ErrInvalidImage.
	// The caller closes it.
	Uncompressed(ctx context.Context) (io.ReadCloser, error)
}

type storedImage struct {
	ref      string
	digest   Digest
	platform Platform
	created  time.Time
	config   ImageConfig
	layers   []Layer
	size     int64
}

func (im *storedImage) Reference() string   { return im.ref }
func (im *storedImage) Digest() Digest      { return im.digest }
func (im *storedImage) Platform() Platform  { return im.platform }
func (im *storedImage) Config() ImageConfig { return im.config }
func (im *storedImage) Created() time.Time  { return im.created }
func (im *storedImage) Layers() []Layer     { return im.layers }
func (im *storedImage) Size() int64         { return im.size }

type storedLayer struct {
	blob   blobRef
	diffID Digest
	path   string
}

func (l *storedLayer) Digest() Digest    { return l.blob.Digest }
func (l *storedLayer) DiffID() Digest    { return l.diffID }
func (l *storedLayer) Size() int64       { return l.blob.Size }
func (l *storedLayer) MediaType() string { return l.blob.MediaType }

// Uncompressed implements Layer.
func (l *storedLayer) Uncompressed(ctx context.Context) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return openUncompressed(l.path, l.diffID)
}

// openUncompressed opens a stored layer blob, decompressing gzip or zstd
// (detected from the content, as the media type may lie), and verifies the
// uncompressed digest at EOF.
func openUncompressed(path string, diffID Digest) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("oci: open layer: %w", err)
	}
	rc, _, err := compression.AutoDecompress(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: layer %s: %s", ErrInvalidImage, diffID, err.Error())
	}
	return &verifyReader{r: rc, f: f, h: sha256.New(), want: diffID}, nil
}

// verifyReader hashes what it reads and fails at EOF on a mismatch.
type verifyReader struct {
	r    io.ReadCloser
	f    *os.File
	h    hash.Hash
	want Digest
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		got := Digest(sha256Prefix + hex.EncodeToString(v.h.Sum(nil)))
		if got != v.want {
			return n, fmt.Errorf("%w: layer content is %s, want %s", ErrInvalidImage, got, v.want)
		}
	}
	return n, err
}

func (v *verifyReader) Close() error {
	err := v.r.Close()
	if ferr := v.f.Close(); err == nil {
		err = ferr
	}
	return err
}
