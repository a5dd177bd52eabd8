// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"testing"
)

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"python", "python:3.12", "docker.io/library/python:latest", "ghcr.io/org/app:v1",
		"localhost:5000/a/b@sha256:" + sha64, "x:tag@sha256:" + sha64, "docker://alpine",
		"oci:/tmp/layout", "oci:/tmp/layout:name", "oci-archive:/tmp/a.tar:img:1",
		"UPPER", "", ":", "oci:", "a//b", "a@sha512:00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			return
		}
		r2, err := ParseReference(r.String())
		if err != nil {
			t.Fatalf("ParseReference(%q) = %+v; reparse of %q: %v", s, r, r.String(), err)
		}
		if r2 != r {
			t.Fatalf("ParseReference(%q) = %+v; reparse of %q = %+v", s, r, r.String(), r2)
		}
	})
}

const sha64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + sha64 + `","size":10},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:` + sha64 + `","size":5}]}`))
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:` + sha64 + `","size":-1}}`))
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b)
		if err != nil {
			return
		}
		if len(m.Layers) > maxLayers || m.Config.Size < 0 || m.Config.Size > maxConfigBytes {
			t.Fatalf("decodeManifest accepted %+v", m)
		}
		for _, d := range append(m.Layers, m.Config) {
			if _, err := ParseDigest(string(d.Digest)); err != nil || d.Size < 0 {
				t.Fatalf("decodeManifest accepted descriptor %+v", d)
			}
		}
		if _, err := sniffKind("", b); err != nil {
			t.Fatalf("sniffKind rejects a valid manifest: %v", err)
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + sha64 + `","size":7,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := decodeIndex(b)
		if err != nil {
			return
		}
		for _, p := range []Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}} {
			if br, err := ix.choose(p); err == nil {
				if _, err := ParseDigest(string(br.Digest)); err != nil {
					t.Fatalf("choose returned bad digest %q", br.Digest)
				}
			}
		}
	})
}

func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/","User":"1000","ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:` + sha64 + `"]}}`))
	f.Add([]byte(`{"rootfs":{"type":"layers"},"config":{"Cmd":["a\u0000b"]}}`))
	f.Add([]byte(`{"created":"2024-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":[]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeConfig(b)
		if err != nil {
			return
		}
		for _, d := range c.DiffIDs {
			if _, err := ParseDigest(string(d)); err != nil {
				t.Fatalf("decodeConfig accepted diff_id %q", d)
			}
		}
		for _, s := range append(append(append([]string{}, c.Config.Env...), c.Config.Cmd...), c.Config.Entrypoint...) {
			for i := 0; i < len(s); i++ {
				if s[i] == 0 {
					t.Fatalf("decodeConfig accepted NUL in %q", s)
				}
			}
		}
	})
}
