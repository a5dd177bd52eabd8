// SPDX-License-Identifier: Apache-2.0

package oci_test

import (
	"errors"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/oci"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseReference(t *testing.T) {
	tests := []struct {
		in   string
		want string
		r    oci.Reference
	}{
		{"python", "docker.io/library/python:latest", oci.Reference{Transport: oci.TransportDocker, Domain: "docker.io", Repository: "library/python", Tag: "latest"}},
		{"python:3.12-slim", "docker.io/library/python:3.12-slim", oci.Reference{}},
		{"docker://alpine", "docker.io/library/alpine:latest", oci.Reference{}},
		{"user/app", "docker.io/user/app:latest", oci.Reference{}},
		{"ghcr.io/org/app:v1", "ghcr.io/org/app:v1", oci.Reference{Transport: oci.TransportDocker, Domain: "ghcr.io", Repository: "org/app", Tag: "v1"}},
		{"localhost:5000/app@sha256:" + hex64, "localhost:5000/app@sha256:" + hex64, oci.Reference{Transport: oci.TransportDocker, Domain: "localhost:5000", Repository: "app", Digest: "sha256:" + hex64}},
		{"app:1@sha256:" + hex64, "docker.io/library/app:1@sha256:" + hex64, oci.Reference{}},
		{"oci:/tmp/l", "oci:/tmp/l", oci.Reference{Transport: oci.TransportOCI, Path: "/tmp/l"}},
		{"oci:/tmp/l:busybox", "oci:/tmp/l:busybox", oci.Reference{Transport: oci.TransportOCI, Path: "/tmp/l", Name: "busybox"}},
		{"oci-archive:/tmp/a.tar:x:1", "oci-archive:/tmp/a.tar:x:1", oci.Reference{Transport: oci.TransportOCIArchive, Path: "/tmp/a.tar", Name: "x:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := oci.ParseReference(tt.in)
			if err != nil {
				t.Fatalf("ParseReference(%q) = %v", tt.in, err)
			}
			if got := r.String(); got != tt.want {
				t.Errorf("ParseReference(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
			if tt.r.Transport != "" && r != tt.r {
				t.Errorf("ParseReference(%q) = %+v, want %+v", tt.in, r, tt.r)
			}
		})
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "oci:", "oci:rel/../x", "x@sha256:short", "x@sha512:" + hex64 + hex64, "oci:/a:b c"} {
		if _, err := oci.ParseReference(bad); !errors.Is(err, oci.ErrInvalidReference) {
			t.Errorf("ParseReference(%q) = %v, want ErrInvalidReference", bad, err)
		}
	}
}

func TestParsePlatformAndPolicy(t *testing.T) {
	p, err := oci.ParsePlatform("linux/arm64/v8")
	if err != nil || p != (oci.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}) || p.String() != "linux/arm64/v8" {
		t.Errorf("ParsePlatform = %+v, %v", p, err)
	}
	if _, err := oci.ParsePlatform("linux"); err == nil {
		t.Error("ParsePlatform(linux) succeeded")
	}
	for _, pp := range []oci.PullPolicy{oci.PullAlways, oci.PullIfMissing, oci.PullNever} {
		if got, err := oci.ParsePullPolicy(pp.String()); err != nil || got != pp {
			t.Errorf("ParsePullPolicy(%q) = %v, %v", pp, got, err)
		}
	}
}
