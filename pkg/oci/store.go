// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Config configures a Store.
type Config struct {
	// Dir is the store's root directory (MSB_HOME/images in the product).
	// It is created if missing. Required.
	Dir string
	// RegistriesConfPath overrides the containers registries.conf (mirrors,
	// blocked and insecure registries); "" means the system default
	// (/etc/containers/registries.conf and registries.conf.d).
	RegistriesConfPath string
	// UserAgent is sent to registries; "" means "microsandbox-go".
	UserAgent string
}

// Store is a content-addressed image cache in a directory. The directory
// is an OCI image layout (image-spec image-layout.md): blobs/sha256/<hex>
// holds manifests, configs and layers as fetched, and index.json lists the
// stored images, each with its reference in the
// org.opencontainers.image.ref.name annotation and its platform; so
// "oci:DIR:docker.io/library/python:latest" reads it back. Beside the
// layout: diffids/ (verified uncompressed digest per layer blob), inuse/
// (holder markers), locks/ and tmp/.
//
// A Store may be used from many goroutines and many processes at once.
type Store struct {
	dir       string
	regConf   string
	userAgent string
}

const (
	annotationRefName = "org.opencontainers.image.ref.name"
	annotationPulled  = "dev.microsandbox.pulled"
	maxHolderLen      = 255
)

// New opens (creating if needed) the store rooted at cfg.Dir.
func New(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("oci: store: Config.Dir is empty")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("oci: store: %w", err)
	}
	for _, d := range []string{"blobs/sha256", "diffids/sha256", "inuse", "locks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("oci: store: %w", err)
		}
	}
	layout := filepath.Join(dir, "oci-layout")
	if _, err := os.Stat(layout); errors.Is(err, os.ErrNotExist) {
		if err := writeFileAtomic(dir, layout, []byte(`{"imageLayoutVersion":"1.0.0"}`+"\n")); err != nil {
			return nil, err
		}
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "microsandbox-go"
	}
	return &Store{dir: dir, regConf: cfg.RegistriesConfPath, userAgent: ua}, nil
}

// Dir returns the store's root directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobPath(d Digest) string {
	return filepath.Join(s.dir, "blobs", "sha256", d.Hex())
}

func (s *Store) lockPath(name string) string { return filepath.Join(s.dir, "locks", name+".lock") }

// writeFileAtomic writes b to path through a temporary file in dir and a
// rename, so readers see the old or the new content, never a mix.
func writeFileAtomic(dir, path string, b []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("oci: store: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("oci: store: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// indexFile is index.json.
type indexFile struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// readIndex reads index.json; the caller holds the index lock.
func (s *Store) readIndex() ([]descriptor, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "index.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oci: store: %w", err)
	}
	var ix indexFile
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("oci: store: index.json: %w", err)
	}
	return ix.Manifests, nil
}

// writeIndex replaces index.json; the caller holds the index lock
// exclusively.
func (s *Store) writeIndex(entries []descriptor) error {
	if entries == nil {
		entries = []descriptor{}
	}
	b, err := json.MarshalIndent(indexFile{SchemaVersion: 2, MediaType: MediaTypeOCIIndex, Manifests: entries}, "", "\t")
	if err != nil {
		return fmt.Errorf("oci: store: %w", err)
	}
	return writeFileAtomic(s.dir, filepath.Join(s.dir, "index.json"), append(b, '\n'))
}

// withIndex runs fn holding the index lock.
func (s *Store) withIndex(ctx context.Context, exclusive bool, fn func(entries []descriptor) error) error {
	l, err := lockFile(ctx, s.lockPath("index"), exclusive)
	if err != nil {
		return err
	}
	defer l.unlock()
	entries, err := s.readIndex()
	if err != nil {
		return err
	}
	return fn(entries)
}

func entryPlatform(d descriptor) Platform {
	if d.Platform == nil {
		return Platform{}
	}
	return Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}
}

// find returns the entry for reference ref and platform p, if any.
func find(entries []descriptor, ref string, p Platform) (descriptor, bool) {
	for _, e := range entries {
		if e.Annotations[annotationRefName] == ref && p.matches(entryPlatform(e)) {
			return e, true
		}
	}
	return descriptor{}, false
}

// loadImage builds an Image from an index entry. The blobs were verified
// when stored; the documents are decoded again with the same checks.
func (s *Store) loadImage(e descriptor) (Image, error) {
	d, err := ParseDigest(e.Digest)
	if err != nil {
		return nil, fmt.Errorf("oci: store: index entry: %w", err)
	}
	mb, err := os.ReadFile(s.blobPath(d))
	if err != nil {
		return nil, fmt.Errorf("oci: store: manifest %s: %w", d, err)
	}
	m, err := decodeManifest(mb)
	if err != nil {
		return nil, err
	}
	cb, err := os.ReadFile(s.blobPath(m.Config.Digest))
	if err != nil {
		return nil, fmt.Errorf("oci: store: config %s: %w", m.Config.Digest, err)
	}
	c, err := decodeConfig(cb)
	if err != nil {
		return nil, err
	}
	if len(c.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%w: %d layers but %d diff_ids", ErrInvalidImage, len(m.Layers), len(c.DiffIDs))
	}
	im := &storedImage{
		ref:      e.Annotations[annotationRefName],
		digest:   d,
		platform: entryPlatform(e),
		created:  c.Created,
		config:   c.Config,
		size:     int64(len(mb)) + m.Config.Size,
	}
	for i, l := range m.Layers {
		im.layers = append(im.layers, &storedLayer{blob: l, diffID: c.DiffIDs[i], path: s.blobPath(l.Digest)})
		im.size += l.Size
	}
	return im, nil
}

// Get returns the stored image for ref, a reference (normalized as by
// ParseReference) or a manifest digest "sha256:...". For a reference
// stored for several platforms, p chooses; the zero Platform means
// DefaultPlatform. It does no network I/O; a missing image is ErrNotFound.
func (s *Store) Get(ctx context.Context, ref string, p Platform) (Image, error) {
	p = p.orDefault()
	var im Image
	err := s.withIndex(ctx, false, func(entries []descriptor) error {
		matched, err := match(entries, ref)
		if err != nil {
			return err
		}
		for _, e := range matched {
			if strings.HasPrefix(ref, sha256Prefix) || p.matches(entryPlatform(e)) {
				im, err = s.loadImage(e)
				return err
			}
		}
		return fmt.Errorf("%w: image %s for %s", ErrNotFound, truncate(ref), p)
	})
	return im, err
}

// match returns the entries that ref names: by manifest digest when ref is
// a digest, else by normalized reference.
func match(entries []descriptor, ref string) ([]descriptor, error) {
	var out []descriptor
	if strings.HasPrefix(ref, sha256Prefix) {
		d, err := ParseDigest(ref)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidReference, err.Error())
		}
		for _, e := range entries {
			if e.Digest == string(d) {
				out = append(out, e)
			}
		}
	} else {
		r, err := ParseReference(ref)
		if err != nil {
			return nil, err
		}
		name := r.String()
		for _, e := range entries {
			if e.Annotations[annotationRefName] == name {
				out = append(out, e)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, truncate(ref))
	}
	return out, nil
}

// Summary describes a stored image for List.
type Summary struct {
	Reference string
	Digest    Digest
	Platform  Platform
	// Size is the total of manifest, config and compressed layer sizes.
	Size   int64
	Layers int
	// Created is the creation time from the config; Pulled when it was
	// stored.
	Created time.Time
	Pulled  time.Time
	// Holders are the in-use markers (see Acquire).
	Holders []string
}

// List returns the stored images, newest pull first.
func (s *Store) List(ctx context.Context) ([]Summary, error) {
	var out []Summary
	err := s.withIndex(ctx, false, func(entries []descriptor) error {
		for _, e := range entries {
			im, err := s.loadImage(e)
			if err != nil {
				return err
			}
			holders, err := s.holders(im.Digest())
			if err != nil {
				return err
			}
			pulled, _ := time.Parse(time.RFC3339Nano, e.Annotations[annotationPulled])
			out = append(out, Summary{
				Reference: im.Reference(), Digest: im.Digest(), Platform: im.Platform(),
				Size: im.Size(), Layers: len(im.Layers()), Created: im.Created(), Pulled: pulled,
				Holders: holders,
			})
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pulled.After(out[j].Pulled) })
	return out, err
}

func validHolder(h string) error {
	if h == "" || h == "." || h == ".." || len(h) > maxHolderLen || strings.ContainsAny(h, "/\x00") {
		return fmt.Errorf("oci: holder %q: want a non-empty file name", truncate(h))
	}
	return nil
}

func (s *Store) inUseDir(d Digest) string { return filepath.Join(s.dir, "inuse", d.Hex()) }

func (s *Store) holders(d Digest) ([]string, error) {
	des, err := os.ReadDir(s.inUseDir(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oci: store: %w", err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out, nil
}

// Acquire marks the image with manifest digest d as in use by holder (a
// sandbox name, say), so that Remove and Prune leave it alone. Markers are
// files: they outlive the process, and the holder must Release them (the
// sandbox layer does so when it removes the sandbox). Acquiring twice is
// the same as once. The image must be in the store (ErrNotFound).
func (s *Store) Acquire(ctx context.Context, d Digest, holder string) error {
	if err := validHolder(holder); err != nil {
		return err
	}
	return s.withIndex(ctx, true, func(entries []descriptor) error {
		if _, err := match(entries, string(d)); err != nil {
			return err
		}
		if err := os.MkdirAll(s.inUseDir(d), 0o755); err != nil {
			return fmt.Errorf("oci: store: %w", err)
		}
		if err := os.WriteFile(filepath.Join(s.inUseDir(d), holder), nil, 0o644); err != nil {
			return fmt.Errorf("oci: store: %w", err)
		}
		return nil
	})
}

// Release removes holder's in-use marker from image d. Releasing a marker
// that does not exist is not an error.
func (s *Store) Release(ctx context.Context, d Digest, holder string) error {
	if err := validHolder(holder); err != nil {
		return err
	}
	if _, err := ParseDigest(string(d)); err != nil {
		return err
	}
	return s.withIndex(ctx, true, func([]descriptor) error {
		err := os.Remove(filepath.Join(s.inUseDir(d), holder))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("oci: store: %w", err)
		}
		os.Remove(s.inUseDir(d)) // only if empty
		return nil
	})
}

// Holders returns the in-use markers of image d.
func (s *Store) Holders(ctx context.Context, d Digest) ([]string, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return nil, err
	}
	var out []string
	err := s.withIndex(ctx, false, func([]descriptor) error {
		var err error
		out, err = s.holders(d)
		return err
	})
	return out, err
}

// Remove removes ref (a reference, all its platforms, or a manifest
// digest, all its references) from the store and frees blobs no other
// image uses. If an image would lose its last reference while it has
// holders, Remove fails with ErrInUse unless force is set; force also
// drops the holders' markers.
func (s *Store) Remove(ctx context.Context, ref string, force bool) error {
	err := s.withIndex(ctx, true, func(entries []descriptor) error {
		matched, err := match(entries, ref)
		if err != nil {
			return err
		}
		drop := map[string]bool{}
		for _, e := range matched {
			drop[e.Digest+"\x00"+e.Annotations[annotationRefName]+"\x00"+entryPlatform(e).String()] = true
		}
		var keep []descriptor
		live := map[string]bool{}
		for _, e := range entries {
			if !drop[e.Digest+"\x00"+e.Annotations[annotationRefName]+"\x00"+entryPlatform(e).String()] {
				keep = append(keep, e)
				live[e.Digest] = true
			}
		}
		orphans := map[Digest]bool{}
		for _, e := range matched {
			if !live[e.Digest] {
				orphans[Digest(e.Digest)] = true
			}
		}
		for d := range orphans {
			h, err := s.holders(d)
			if err != nil {
				return err
			}
			if len(h) > 0 && !force {
				return fmt.Errorf("%w: %s (%s) held by %s", ErrInUse, truncate(ref), d, strings.Join(h, ", "))
			}
		}
		if err := s.writeIndex(keep); err != nil {
			return err
		}
		for d := range orphans {
			os.RemoveAll(s.inUseDir(d))
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = s.gc(ctx)
	return err
}

// PruneReport says what Prune removed.
type PruneReport struct {
	ImagesRemoved  int
	BlobsRemoved   int
	BytesReclaimed int64
}

// Prune removes every image that has no holder, then every blob that no
// remaining image uses and leftovers of interrupted pulls.
func (s *Store) Prune(ctx context.Context) (PruneReport, error) {
	var rep PruneReport
	err := s.withIndex(ctx, true, func(entries []descriptor) error {
		var keep []descriptor
		for _, e := range entries {
			d, err := ParseDigest(e.Digest)
			if err != nil {
				return fmt.Errorf("oci: store: index entry: %w", err)
			}
			h, err := s.holders(d)
			if err != nil {
				return err
			}
			if len(h) > 0 {
				keep = append(keep, e)
			} else {
				rep.ImagesRemoved++
			}
		}
		if rep.ImagesRemoved == 0 {
			return nil
		}
		return s.writeIndex(keep)
	})
	if err != nil {
		return rep, err
	}
	g, err := s.gc(ctx)
	rep.BlobsRemoved, rep.BytesReclaimed = g.BlobsRemoved, g.BytesReclaimed
	return rep, err
}

// gc deletes blobs that no index entry reaches, their diffid records and
// everything in tmp/. It holds the gc lock exclusively, so no pull (which
// holds it shared while it writes blobs not yet in the index) runs.
func (s *Store) gc(ctx context.Context) (PruneReport, error) {
	var rep PruneReport
	gl, err := lockFile(ctx, s.lockPath("gc"), true)
	if err != nil {
		return rep, err
	}
	defer gl.unlock()
	live := map[string]bool{}
	err = s.withIndex(ctx, false, func(entries []descriptor) error {
		for _, e := range entries {
			d, err := ParseDigest(e.Digest)
			if err != nil {
				return fmt.Errorf("oci: store: index entry: %w", err)
			}
			live[d.Hex()] = true
			mb, err := os.ReadFile(s.blobPath(d))
			if err != nil {
				continue // a broken entry keeps nothing alive
			}
			m, err := decodeManifest(mb)
			if err != nil {
				continue
			}
			live[m.Config.Digest.Hex()] = true
			for _, l := range m.Layers {
				live[l.Digest.Hex()] = true
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	blobs := filepath.Join(s.dir, "blobs", "sha256")
	des, err := os.ReadDir(blobs)
	if err != nil {
		return rep, fmt.Errorf("oci: store: %w", err)
	}
	for _, de := range des {
		if live[de.Name()] {
			continue
		}
		if fi, err := de.Info(); err == nil {
			rep.BytesReclaimed += fi.Size()
		}
		if err := os.Remove(filepath.Join(blobs, de.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return rep, fmt.Errorf("oci: store: %w", err)
		}
		os.Remove(filepath.Join(s.dir, "diffids", "sha256", de.Name()))
		rep.BlobsRemoved++
	}
	tmp := filepath.Join(s.dir, "tmp")
	if des, err := os.ReadDir(tmp); err == nil {
		for _, de := range des {
			os.RemoveAll(filepath.Join(tmp, de.Name()))
		}
	}
	return rep, nil
}

// hashName turns a string into a file name.
func hashName(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// copyCtx is io.Copy that stops when ctx is done.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader, progress func(int64)) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
			if progress != nil {
				progress(n)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
