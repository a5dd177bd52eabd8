// SPDX-License-Identifier: Apache-2.0

package testimages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Epoch is the mtime of every entry, for reproducible layers.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one tar entry of a layer. Type is a tar typeflag
// (tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar,
// tar.TypeBlock, tar.TypeFifo); Mode holds permission bits only.
type Entry struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Linkname string
	Data     []byte
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string
	// ModTime is the entry's mtime; zero means Epoch. Trees packed from
	// disk keep theirs so that Python's .pyc files stay valid.
	ModTime time.Time
}

// Dir, File, Symlink, Hardlink and Whiteout make entries with common
// defaults (root-owned).
func Dir(name string, mode int64) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: mode} }

// File is a regular file.
func File(name string, mode int64, data string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: mode, Data: []byte(data)}
}

// Symlink is a symbolic link to target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// Hardlink is a hard link to the earlier entry target.
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Linkname: target}
}

// Whiteout deletes path (image-spec layer.md ".wh." files).
func Whiteout(path string) Entry {
	dir, base := filepath.Split(path)
	return Entry{Name: dir + ".wh." + base, Type: tar.TypeReg, Mode: 0o644}
}

// OpaqueWhiteout hides the lower layers' contents of dir.
func OpaqueWhiteout(dir string) Entry {
	return Entry{Name: dir + "/.wh..wh..opq", Type: tar.TypeReg, Mode: 0o644}
}

// Image is an image to write into a layout.
type Image struct {
	// Name is the org.opencontainers.image.ref.name of the image in the
	// layout. Images with the same Name and different platforms are
	// written as one image index.
	Name         string
	OS           string // "" means linux
	Architecture string // "" means amd64
	Variant      string
	Env          []string
	Entrypoint   []string
	Cmd          []string
	WorkingDir   string
	User         string
	Layers       [][]Entry
}

// TarLayer returns the uncompressed tar of entries.
func TarLayer(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			Linkname: e.Linkname, Devmajor: e.Devmajor, Devminor: e.Devminor,
			ModTime: Epoch, Format: tar.FormatPAX,
		}
		if !e.ModTime.IsZero() {
			h.ModTime = e.ModTime
		}
		if e.Type == tar.TypeReg {
			h.Size = int64(len(e.Data))
		}
		if len(e.Xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("testimages: %s: %w", e.Name, err)
		}
		if h.Size > 0 {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

type layoutWriter struct{ dir string }

func (w layoutWriter) blob(mediaType string, b []byte) (descriptor, error) {
	d := digestOf(b)
	p := filepath.Join(w.dir, "blobs", "sha256", d[len("sha256:"):])
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return descriptor{}, fmt.Errorf("testimages: %w", err)
	}
	return descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}, nil
}

func (w layoutWriter) json(mediaType string, v any) (descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return descriptor{}, err
	}
	return w.blob(mediaType, b)
}

func (w layoutWriter) image(im Image) (descriptor, error) {
	var layers []descriptor
	var diffIDs []string
	for i, entries := range im.Layers {
		raw, err := TarLayer(entries)
		if err != nil {
			return descriptor{}, fmt.Errorf("testimages: %s layer %d: %w", im.Name, i, err)
		}
		diffIDs = append(diffIDs, digestOf(raw))
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		zw.Write(raw)
		zw.Close()
		d, err := w.blob("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes())
		if err != nil {
			return descriptor{}, err
		}
		layers = append(layers, d)
	}
	p := im.platform()
	cfg := map[string]any{
		"created":      Epoch,
		"architecture": p.Architecture,
		"os":           p.OS,
		"config": map[string]any{
			"Env": im.Env, "Entrypoint": im.Entrypoint, "Cmd": im.Cmd,
			"WorkingDir": im.WorkingDir, "User": im.User,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	if p.Variant != "" {
		cfg["variant"] = p.Variant
	}
	cd, err := w.json("application/vnd.oci.image.config.v1+json", cfg)
	if err != nil {
		return descriptor{}, err
	}
	if layers == nil {
		layers = []descriptor{}
	}
	md, err := w.json("application/vnd.oci.image.manifest.v1+json", map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        cd,
		"layers":        layers,
	})
	if err != nil {
		return descriptor{}, err
	}
	md.Platform = &p
	return md, nil
}

func (im Image) platform() platform {
	p := platform{OS: im.OS, Architecture: im.Architecture, Variant: im.Variant}
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "" {
		p.Architecture = "amd64"
	}
	return p
}

// WriteLayout writes images as an OCI image layout into dir, which must
// not exist yet or be empty.
func WriteLayout(dir string, images []Image) error {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	w := layoutWriter{dir: dir}
	byName := map[string][]descriptor{}
	var names []string
	for _, im := range images {
		d, err := w.image(im)
		if err != nil {
			return err
		}
		if byName[im.Name] == nil {
			names = append(names, im.Name)
		}
		byName[im.Name] = append(byName[im.Name], d)
	}
	sort.Strings(names)
	var top []descriptor
	for _, n := range names {
		ds := byName[n]
		d := ds[0]
		if len(ds) > 1 {
			var err error
			d, err = w.json("application/vnd.oci.image.index.v1+json", map[string]any{
				"schemaVersion": 2,
				"mediaType":     "application/vnd.oci.image.index.v1+json",
				"manifests":     ds,
			})
			if err != nil {
				return err
			}
		} else {
			d.Platform = nil
		}
		d.Annotations = map[string]string{"org.opencontainers.image.ref.name": n}
		top = append(top, d)
	}
	idx, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     top,
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}
