// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Media types (image-spec media-types.md; Docker Image Manifest V2 Schema 2).
const (
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIConfig      = "application/vnd.oci.image.config.v1+json"
	MediaTypeOCILayer       = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeOCILayerZstd   = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Limits on registry-supplied documents. containers/image bounds manifests
// at 4 MiB as well; configs of real images are a few KiB.
const (
	maxManifestBytes = 4 << 20
	maxConfigBytes   = 8 << 20
	maxLayers        = 1024
	maxIndexEntries  = 4096
	maxConfigStrings = 1 << 16
)

// descriptor is image-spec descriptor.md, the fields we use.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platformJSON     `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platformJSON struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// manifestDoc is an image manifest after validation.
type manifestDoc struct {
	MediaType string
	Config    blobRef
	Layers    []blobRef
}

// blobRef is a validated descriptor of a blob.
type blobRef struct {
	MediaType string
	Digest    Digest
	Size      int64
}

// indexDoc is a manifest list / image index after validation.
type indexDoc struct {
	Manifests []indexEntry
}

type indexEntry struct {
	blobRef
	Platform Platform
}

// docKind tells manifests from indexes.
type docKind int

const (
	kindManifest docKind = iota
	kindIndex
)

// sniffKind decides whether b is an index or a manifest: from the transport's
// MIME type when it names one, else from the document's mediaType field,
// else from the presence of "manifests".
func sniffKind(mime string, b []byte) (docKind, error) {
	switch mime {
	case MediaTypeOCIIndex, MediaTypeDockerList:
		return kindIndex, nil
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		return kindManifest, nil
	}
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return 0, fmt.Errorf("%w: manifest: %s", ErrInvalidImage, err.Error())
	}
	switch probe.MediaType {
	case MediaTypeOCIIndex, MediaTypeDockerList:
		return kindIndex, nil
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		return kindManifest, nil
	case "":
		if probe.Manifests != nil {
			return kindIndex, nil
		}
		if probe.SchemaVersion == 2 {
			return kindManifest, nil
		}
	}
	return 0, fmt.Errorf("%w: unsupported manifest type %q (schema %d)", ErrInvalidImage, truncate(mime+probe.MediaType), probe.SchemaVersion)
}

func parseBlobRef(d descriptor, what string) (blobRef, error) {
	dg, err := ParseDigest(d.Digest)
	if err != nil {
		return blobRef{}, fmt.Errorf("%w: %s: %s", ErrInvalidImage, what, err.Error())
	}
	if d.Size < 0 {
		return blobRef{}, fmt.Errorf("%w: %s %s: negative size %d", ErrInvalidImage, what, dg, d.Size)
	}
	return blobRef{MediaType: d.MediaType, Digest: dg, Size: d.Size}, nil
}

// decodeManifest parses an image manifest (OCI or Docker schema 2) read
// from a registry or layout. It checks: size, JSON shape, schemaVersion 2,
// a consistent mediaType, digests in canonical sha256 form, sizes not
// negative, config and layer media types we can use (encrypted and foreign
// layers are refused), and at most maxLayers layers.
func decodeManifest(b []byte) (manifestDoc, error) {
	if len(b) > maxManifestBytes {
		return manifestDoc{}, fmt.Errorf("%w: manifest larger than %d bytes", ErrInvalidImage, maxManifestBytes)
	}
	var m struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return manifestDoc{}, fmt.Errorf("%w: manifest: %s", ErrInvalidImage, err.Error())
	}
	if m.SchemaVersion != 2 {
		return manifestDoc{}, fmt.Errorf("%w: manifest schemaVersion %d, want 2", ErrInvalidImage, m.SchemaVersion)
	}
	switch m.MediaType {
	case "", MediaTypeOCIManifest, MediaTypeDockerManifest:
	default:
		return manifestDoc{}, fmt.Errorf("%w: manifest mediaType %q", ErrInvalidImage, truncate(m.MediaType))
	}
	cfg, err := parseBlobRef(m.Config, "config")
	if err != nil {
		return manifestDoc{}, err
	}
	switch cfg.MediaType {
	case MediaTypeOCIConfig, MediaTypeDockerConfig:
	default:
		return manifestDoc{}, fmt.Errorf("%w: config media type %q is not an image config", ErrInvalidImage, truncate(cfg.MediaType))
	}
	if cfg.Size > maxConfigBytes {
		return manifestDoc{}, fmt.Errorf("%w: config size %d exceeds %d", ErrInvalidImage, cfg.Size, maxConfigBytes)
	}
	if len(m.Layers) > maxLayers {
		return manifestDoc{}, fmt.Errorf("%w: %d layers exceed %d", ErrInvalidImage, len(m.Layers), maxLayers)
	}
	doc := manifestDoc{MediaType: m.MediaType, Config: cfg}
	for i, l := range m.Layers {
		br, err := parseBlobRef(l, fmt.Sprintf("layer %d", i))
		if err != nil {
			return manifestDoc{}, err
		}
		switch br.MediaType {
		case MediaTypeOCILayer, MediaTypeOCILayerGzip, MediaTypeOCILayerZstd, MediaTypeDockerLayer:
		default:
			return manifestDoc{}, fmt.Errorf("%w: layer %d media type %q unsupported", ErrInvalidImage, i, truncate(br.MediaType))
		}
		doc.Layers = append(doc.Layers, br)
	}
	if doc.MediaType == "" {
		doc.MediaType = MediaTypeOCIManifest
		if cfg.MediaType == MediaTypeDockerConfig {
			doc.MediaType = MediaTypeDockerManifest
		}
	}
	return doc, nil
}

// decodeIndex parses an image index or Docker manifest list. It checks
// shape, digests and sizes of the entries; entries of other media types
// (attestations, nested indexes) are kept but never chosen.
func decodeIndex(b []byte) (indexDoc, error) {
	if len(b) > maxManifestBytes {
		return indexDoc{}, fmt.Errorf("%w: index larger than %d bytes", ErrInvalidImage, maxManifestBytes)
	}
	var ix struct {
		SchemaVersion int          `json:"schemaVersion"`
		Manifests     []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(b, &ix); err != nil {
		return indexDoc{}, fmt.Errorf("%w: index: %s", ErrInvalidImage, err.Error())
	}
	if ix.SchemaVersion != 2 {
		return indexDoc{}, fmt.Errorf("%w: index schemaVersion %d, want 2", ErrInvalidImage, ix.SchemaVersion)
	}
	if len(ix.Manifests) > maxIndexEntries {
		return indexDoc{}, fmt.Errorf("%w: index has %d entries, limit %d", ErrInvalidImage, len(ix.Manifests), maxIndexEntries)
	}
	var doc indexDoc
	for i, d := range ix.Manifests {
		br, err := parseBlobRef(d, fmt.Sprintf("index entry %d", i))
		if err != nil {
			return indexDoc{}, err
		}
		e := indexEntry{blobRef: br}
		if d.Platform != nil {
			e.Platform = Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}
		}
		doc.Manifests = append(doc.Manifests, e)
	}
	return doc, nil
}

// choose returns the first image manifest entry for platform p. An entry
// without variant matches any requested variant; a requested variant of ""
// matches any entry (arm64 images say "v8" or nothing).
func (ix indexDoc) choose(p Platform) (blobRef, error) {
	for _, e := range ix.Manifests {
		if e.MediaType != MediaTypeOCIManifest && e.MediaType != MediaTypeDockerManifest {
			continue
		}
		if e.Platform.OS != p.OS || e.Platform.Architecture != p.Architecture {
			continue
		}
		if p.Variant != "" && e.Platform.Variant != "" && p.Variant != e.Platform.Variant {
			continue
		}
		return e.blobRef, nil
	}
	return blobRef{}, fmt.Errorf("%w: no manifest for platform %s", ErrNotFound, p)
}

// ImageConfig is the runtime part of an image configuration (image-spec
// config.md "config"), the defaults a sandbox starts its command with.
type ImageConfig struct {
	// Env holds "KEY=value" entries.
	Env []string
	// Entrypoint and Cmd form the default command (Entrypoint + Cmd).
	Entrypoint []string
	Cmd        []string
	// WorkingDir is the default working directory; "" means "/".
	WorkingDir string
	// User is "user", "uid", "user:group" or "uid:gid"; "" means root.
	User string
	// Labels are the image labels.
	Labels map[string]string
	// StopSignal is the signal name or number that stops the command.
	StopSignal string
	// ExposedPorts lists "port/proto" keys, sorted.
	ExposedPorts []string
}

// configDoc is a decoded image config.
type configDoc struct {
	Created  time.Time
	Platform Platform
	Config   ImageConfig
	DiffIDs  []Digest
}

// decodeConfig parses an image configuration blob (image-spec config.md)
// from a registry or layout. It checks: size, JSON shape, rootfs.type
// "layers", diff_ids in canonical sha256 form, no NUL byte in any string
// that becomes part of a command line or environment, and a bound on the
// number of strings.
func decodeConfig(b []byte) (configDoc, error) {
	if len(b) > maxConfigBytes {
		return configDoc{}, fmt.Errorf("%w: config larger than %d bytes", ErrInvalidImage, maxConfigBytes)
	}
	var c struct {
		Created      *time.Time `json:"created"`
		Architecture string     `json:"architecture"`
		OS           string     `json:"os"`
		Variant      string     `json:"variant"`
		Config       struct {
			Env          []string            `json:"Env"`
			Entrypoint   []string            `json:"Entrypoint"`
			Cmd          []string            `json:"Cmd"`
			WorkingDir   string              `json:"WorkingDir"`
			User         string              `json:"User"`
			Labels       map[string]string   `json:"Labels"`
			StopSignal   string              `json:"StopSignal"`
			ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		} `json:"config"`
		RootFS struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return configDoc{}, fmt.Errorf("%w: config: %s", ErrInvalidImage, err.Error())
	}
	if c.RootFS.Type != "layers" {
		return configDoc{}, fmt.Errorf("%w: config rootfs.type %q, want \"layers\"", ErrInvalidImage, truncate(c.RootFS.Type))
	}
	doc := configDoc{Platform: Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}}
	if c.Created != nil {
		doc.Created = *c.Created
	}
	for i, s := range c.RootFS.DiffIDs {
		d, err := ParseDigest(s)
		if err != nil {
			return configDoc{}, fmt.Errorf("%w: config diff_ids[%d]: %s", ErrInvalidImage, i, err.Error())
		}
		doc.DiffIDs = append(doc.DiffIDs, d)
	}
	cc := c.Config
	n := len(cc.Env) + len(cc.Entrypoint) + len(cc.Cmd) + len(cc.Labels) + len(cc.ExposedPorts)
	if n > maxConfigStrings {
		return configDoc{}, fmt.Errorf("%w: config holds %d strings, limit %d", ErrInvalidImage, n, maxConfigStrings)
	}
	all := append(append(append([]string{cc.WorkingDir, cc.User, cc.StopSignal}, cc.Env...), cc.Entrypoint...), cc.Cmd...)
	for _, s := range all {
		if strings.IndexByte(s, 0) >= 0 {
			return configDoc{}, fmt.Errorf("%w: config string %q holds a NUL byte", ErrInvalidImage, truncate(s))
		}
	}
	doc.Config = ImageConfig{
		Env:        cc.Env,
		Entrypoint: cc.Entrypoint,
		Cmd:        cc.Cmd,
		WorkingDir: cc.WorkingDir,
		User:       cc.User,
		Labels:     cc.Labels,
		StopSignal: cc.StopSignal,
	}
	for p := range cc.ExposedPorts {
		doc.Config.ExposedPorts = append(doc.Config.ExposedPorts, p)
	}
	sort.Strings(doc.Config.ExposedPorts)
	return doc, nil
}
