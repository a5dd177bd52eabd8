// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"fmt"
	"path/filepath"
	"strings"

	dockerref "go.podman.io/image/v5/docker/reference"
)

// Transport says where an image reference points.
type Transport string

// Transports.
const (
	// TransportDocker is a registry (Docker Registry HTTP API v2 / OCI
	// distribution-spec). It is the default.
	TransportDocker Transport = "docker"
	// TransportOCI is an OCI image layout directory (image-spec
	// image-layout.md), written "oci:PATH[:NAME]".
	TransportOCI Transport = "oci"
	// TransportOCIArchive is a tar of an OCI image layout, written
	// "oci-archive:PATH[:NAME]".
	TransportOCIArchive Transport = "oci-archive"
)

// Reference is a parsed, normalized image reference.
type Reference struct {
	// Transport is where the image comes from.
	Transport Transport
	// Domain is the registry host[:port] (TransportDocker only), e.g.
	// "docker.io".
	Domain string
	// Repository is the path within the registry (TransportDocker only),
	// e.g. "library/python".
	Repository string
	// Tag is the tag; "latest" when a docker reference names neither tag
	// nor digest.
	Tag string
	// Digest pins the manifest (or manifest list); "" if not given.
	Digest Digest
	// Path is the layout directory or archive file (TransportOCI,
	// TransportOCIArchive).
	Path string
	// Name selects an image in the layout by its
	// org.opencontainers.image.ref.name annotation; "" means the only one.
	Name string
}

const maxReferenceLen = 4096

// ParseReference parses an image reference:
//
//	python                                  docker.io/library/python:latest
//	ghcr.io/org/app:1.2                     a tag on another registry
//	localhost:5000/app@sha256:<hex>         a digest (tag and digest may both be given)
//	docker://python                         explicit transport
//	oci:/path/to/layout[:name]              an OCI layout directory
//	oci-archive:/path/to/file.tar[:name]    a tar of an OCI layout
//
// Paths may not contain ':'. Errors wrap ErrInvalidReference.
func ParseReference(s string) (Reference, error) {
	if len(s) > maxReferenceLen {
		return Reference{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidReference, maxReferenceLen)
	}
	if strings.ContainsAny(s, "\x00\n") {
		return Reference{}, fmt.Errorf("%w: %q: control character", ErrInvalidReference, truncate(s))
	}
	for _, t := range []Transport{TransportOCIArchive, TransportOCI} {
		if rest, ok := strings.CutPrefix(s, string(t)+":"); ok {
			return parseLayoutReference(t, rest)
		}
	}
	rest, _ := strings.CutPrefix(s, "docker://")
	return parseDockerReference(rest)
}

func parseLayoutReference(t Transport, rest string) (Reference, error) {
	path, name, _ := strings.Cut(rest, ":")
	if path == "" {
		return Reference{}, fmt.Errorf("%w: %s: empty path", ErrInvalidReference, t)
	}
	if filepath.Clean(path) != path {
		return Reference{}, fmt.Errorf("%w: %s:%s: path not in clean form (want %s)", ErrInvalidReference, t, truncate(path), truncate(filepath.Clean(path)))
	}
	if !validRefName(name) {
		return Reference{}, fmt.Errorf("%w: %s: image name %q", ErrInvalidReference, t, truncate(name))
	}
	return Reference{Transport: t, Path: path, Name: name}, nil
}

// validRefName accepts what image-layout ref names may hold (the
// annotations.md grammar is loose; we allow the characters of a fully
// qualified docker reference, which covers it).
func validRefName(n string) bool {
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._:@/+", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func parseDockerReference(s string) (Reference, error) {
	named, err := dockerref.ParseNormalizedNamed(s)
	if err != nil {
		return Reference{}, fmt.Errorf("%w: %q: %s", ErrInvalidReference, truncate(s), err.Error())
	}
	r := Reference{
		Transport:  TransportDocker,
		Domain:     dockerref.Domain(named),
		Repository: dockerref.Path(named),
	}
	if tagged, ok := named.(dockerref.Tagged); ok {
		r.Tag = tagged.Tag()
	}
	if digested, ok := named.(dockerref.Digested); ok {
		d, err := ParseDigest(digested.Digest().String())
		if err != nil {
			return Reference{}, fmt.Errorf("%w: %q: %s", ErrInvalidReference, truncate(s), err.Error())
		}
		r.Digest = d
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// String returns the canonical form: "docker.io/library/python:latest",
// "host/repo:tag@sha256:...", "oci:/dir:name", "oci-archive:/file.tar".
// ParseReference(r.String()) returns r.
func (r Reference) String() string {
	switch r.Transport {
	case TransportOCI, TransportOCIArchive:
		s := string(r.Transport) + ":" + r.Path
		if r.Name != "" {
			s += ":" + r.Name
		}
		return s
	}
	s := r.Domain + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + string(r.Digest)
	}
	return s
}
