// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	dockerref "go.podman.io/image/v5/docker/reference"
	ociarchive "go.podman.io/image/v5/oci/archive"
	ocilayout "go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"
)

// PullPolicy says when Pull contacts the source.
type PullPolicy int

// Pull policies.
const (
	// PullIfMissing uses the stored image if there is one (no network),
	// else pulls. It is the zero value.
	PullIfMissing PullPolicy = iota
	// PullAlways resolves the reference at the source every time; blobs
	// already stored are not fetched again.
	PullAlways
	// PullNever uses only the store; a missing image is ErrNotFound.
	PullNever
)

// String returns "if-missing", "always" or "never".
func (p PullPolicy) String() string {
	switch p {
	case PullIfMissing:
		return "if-missing"
	case PullAlways:
		return "always"
	case PullNever:
		return "never"
	}
	return fmt.Sprintf("PullPolicy(%d)", int(p))
}

// ParsePullPolicy parses "if-missing" (or "missing"), "always", "never".
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch s {
	case "if-missing", "missing", "":
		return PullIfMissing, nil
	case "always":
		return PullAlways, nil
	case "never":
		return PullNever, nil
	}
	return 0, fmt.Errorf("oci: pull policy %q: want always, if-missing or never", truncate(s))
}

// Credentials authenticate to a registry.
type Credentials struct {
	Username string
	Password string
	// IdentityToken is an OAuth2 refresh token; it replaces Password.
	IdentityToken string
}

// Progress reports the transfer of one layer. Done and Total are bytes of
// the compressed blob.
type Progress struct {
	Reference string
	Layer     Digest
	// Index is the layer's position, bottom first, of Count layers.
	Index, Count int
	Done, Total  int64
	// Cached is set when the blob was already stored (Done == Total).
	Cached bool
}

// PullOptions configures one Pull. The zero value pulls for
// DefaultPlatform with PullIfMissing, credentials from the usual files,
// TLS verified against the system roots.
type PullOptions struct {
	Policy PullPolicy
	// Platform selects the image of a multi-platform index and is checked
	// against a single image's config; zero means DefaultPlatform.
	Platform Platform
	// Credentials, if set, are used instead of the auth files.
	Credentials *Credentials
	// AuthFile overrides the auth file; "" means the usual search:
	// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
	// ~/.config/containers/auth.json, ~/.docker/config.json, ~/.dockercfg
	// (docker credential helpers included).
	AuthFile string
	// Insecure allows plain HTTP and unverified TLS to the registry.
	Insecure bool
	// CACertificates are extra PEM CA certificates trusted besides the
	// system roots.
	CACertificates []byte
	// Progress, if set, is called from the pulling goroutine as layer
	// bytes arrive. It must not call back into the Store.
	Progress func(Progress)
}

// Pull makes the image ref available in the store and returns it.
//
// References are parsed with ParseReference. Parallel pulls of the same
// reference and platform, from goroutines or processes, are serialized by
// a lock file; with PullIfMissing the later ones find the image stored
// and fetch nothing.
//
// Everything from the source is hostile. Pull checks: the manifest digest
// against a digest in the reference, a chosen index entry's digest, every
// blob's size and sha256 as it is written (a blob is visible in the store
// only after it verified), each layer's uncompressed digest against the
// config's diff_ids, the document checks of decodeManifest, decodeIndex
// and decodeConfig, and the platform.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (Image, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	p := opts.Platform.orDefault()
	name := r.String()
	if opts.Policy != PullAlways {
		im, err := s.lookup(ctx, name, p)
		if im != nil || err != nil {
			return im, err
		}
		if opts.Policy == PullNever {
			return nil, fmt.Errorf("%w: image %s for %s is not stored and the pull policy is never", ErrNotFound, name, p)
		}
	}
	// Lock order: gc (shared) -> pull -> index.
	gl, err := lockFile(ctx, s.lockPath("gc"), false)
	if err != nil {
		return nil, err
	}
	defer gl.unlock()
	pl, err := lockFile(ctx, s.lockPath("pull-"+hashName(name+"\x00"+p.String())), true)
	if err != nil {
		return nil, err
	}
	defer pl.unlock()
	if opts.Policy != PullAlways {
		if im, err := s.lookup(ctx, name, p); im != nil || err != nil {
			return im, err
		}
	}
	return s.pull(ctx, r, p, opts)
}

// lookup returns the stored image or nil.
func (s *Store) lookup(ctx context.Context, name string, p Platform) (Image, error) {
	var im Image
	err := s.withIndex(ctx, false, func(entries []descriptor) error {
		e, ok := find(entries, name, p)
		if !ok {
			return nil
		}
		var err error
		im, err = s.loadImage(e)
		if err != nil {
			im = nil // a damaged entry is pulled again
		}
		return nil
	})
	return im, err
}

func (s *Store) systemContext(p Platform, opts PullOptions, certDir string) *types.SystemContext {
	sys := &types.SystemContext{
		OSChoice:                 p.OS,
		ArchitectureChoice:       p.Architecture,
		VariantChoice:            p.Variant,
		DockerRegistryUserAgent:  s.userAgent,
		BigFilesTemporaryDir:     filepath.Join(s.dir, "tmp"),
		SystemRegistriesConfPath: s.regConf,
		AuthFilePath:             opts.AuthFile,
		DockerCertPath:           certDir,
	}
	if s.regConf != "" {
		// A given registries.conf stands alone: no drop-in directory.
		sys.SystemRegistriesConfDirPath = filepath.Join(s.dir, "tmp", "no-registries.conf.d")
	}
	if opts.Credentials != nil {
		sys.DockerAuthConfig = &types.DockerAuthConfig{
			Username:      opts.Credentials.Username,
			Password:      opts.Credentials.Password,
			IdentityToken: opts.Credentials.IdentityToken,
		}
	}
	if opts.Insecure {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	return sys
}

func openSource(ctx context.Context, r Reference, sys *types.SystemContext) (types.ImageSource, error) {
	var ir types.ImageReference
	var err error
	switch r.Transport {
	case TransportDocker:
		fetch := r
		if fetch.Digest != "" {
			fetch.Tag = "" // the digest is authoritative; containers/image refuses both
		}
		var named dockerref.Named
		named, err = dockerref.ParseNormalizedNamed(fetch.String())
		if err == nil {
			ir, err = docker.NewReference(named)
		}
	case TransportOCI:
		ir, err = ocilayout.NewReference(r.Path, r.Name)
	case TransportOCIArchive:
		ir, err = ociarchive.NewReference(r.Path, r.Name)
	default:
		err = fmt.Errorf("unknown transport %q", r.Transport)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalidReference, r, err.Error())
	}
	src, err := ir.NewImageSource(ctx, sys)
	if err != nil {
		return nil, classify(fmt.Errorf("%s: %w", r, err))
	}
	return src, nil
}

func (s *Store) pull(ctx context.Context, r Reference, p Platform, opts PullOptions) (Image, error) {
	name := r.String()
	certDir := ""
	if len(opts.CACertificates) > 0 {
		if !x509.NewCertPool().AppendCertsFromPEM(opts.CACertificates) {
			return nil, errors.New("oci: CACertificates holds no PEM certificate")
		}
		var err error
		if certDir, err = os.MkdirTemp(filepath.Join(s.dir, "tmp"), "certs-"); err != nil {
			return nil, fmt.Errorf("oci: %w", err)
		}
		defer os.RemoveAll(certDir)
		if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), opts.CACertificates, 0o644); err != nil {
			return nil, fmt.Errorf("oci: %w", err)
		}
	}
	sys := s.systemContext(p, opts, certDir)
	src, err := openSource(ctx, r, sys)
	if err != nil {
		return nil, err
	}
	defer src.Close()

	// 1. The manifest, through an index if there is one.
	mb, mime, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, classify(fmt.Errorf("%s: manifest: %w", name, err))
	}
	if r.Digest != "" && FromBytes(mb) != r.Digest {
		return nil, fmt.Errorf("%w: %s: manifest digest is %s", ErrInvalidImage, name, FromBytes(mb))
	}
	kind, err := sniffKind(mime, mb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if kind == kindIndex {
		ix, err := decodeIndex(mb)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		want, err := ix.choose(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		d := digest.Digest(want.Digest)
		if mb, _, err = src.GetManifest(ctx, &d); err != nil {
			return nil, classify(fmt.Errorf("%s: manifest %s: %w", name, want.Digest, err))
		}
		if got := FromBytes(mb); got != want.Digest {
			return nil, fmt.Errorf("%w: %s: manifest %s has digest %s", ErrInvalidImage, name, want.Digest, got)
		}
	}
	m, err := decodeManifest(mb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}

	// 2. The config, checked against the platform and the layers.
	if err := s.fetchBlob(ctx, src, m.Config, nil); err != nil {
		return nil, fmt.Errorf("%s: config: %w", name, err)
	}
	cb, err := os.ReadFile(s.blobPath(m.Config.Digest))
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", name, err)
	}
	c, err := decodeConfig(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if c.Platform.OS != "" && !p.matches(c.Platform) {
		return nil, fmt.Errorf("%w: %s is for %s, want %s", ErrNotFound, name, c.Platform, p)
	}
	if len(c.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%w: %s: %d layers but %d diff_ids", ErrInvalidImage, name, len(m.Layers), len(c.DiffIDs))
	}

	// 3. The layers, bottom first.
	for i, l := range m.Layers {
		pr := Progress{Reference: name, Layer: l.Digest, Index: i, Count: len(m.Layers), Total: l.Size}
		var report func(int64)
		if opts.Progress != nil {
			report = func(done int64) { pr.Done = done; opts.Progress(pr) }
		}
		if err := s.fetchBlob(ctx, src, l, report); err != nil {
			return nil, fmt.Errorf("%s: layer %d: %w", name, i, err)
		}
		if err := s.verifyDiffID(ctx, l.Digest, c.DiffIDs[i]); err != nil {
			return nil, fmt.Errorf("%s: layer %d: %w", name, i, err)
		}
	}

	// 4. The manifest blob, then the index entry that makes it visible.
	md := FromBytes(mb)
	if err := s.putBlob(ctx, bytesReader(mb), blobRef{Digest: md, Size: int64(len(mb))}, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	entry := descriptor{
		MediaType: m.MediaType,
		Digest:    string(md),
		Size:      int64(len(mb)),
		Platform:  &platformJSON{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant},
		Annotations: map[string]string{
			annotationRefName: name,
			annotationPulled:  time.Now().UTC().Format(time.RFC3339Nano),
		},
	}
	if c.Platform.OS != "" {
		entry.Platform = &platformJSON{OS: c.Platform.OS, Architecture: c.Platform.Architecture, Variant: c.Platform.Variant}
	}
	var im Image
	err = s.withIndex(ctx, true, func(entries []descriptor) error {
		var keep []descriptor
		for _, e := range entries {
			if e.Annotations[annotationRefName] == name && p.matches(entryPlatform(e)) {
				continue
			}
			keep = append(keep, e)
		}
		if err := s.writeIndex(append(keep, entry)); err != nil {
			return err
		}
		im, err = s.loadImage(entry)
		return err
	})
	return im, err
}

// fetchBlob stores blob b from src unless it is stored already.
func (s *Store) fetchBlob(ctx context.Context, src types.ImageSource, b blobRef, progress func(int64)) error {
	if fi, err := os.Stat(s.blobPath(b.Digest)); err == nil && fi.Size() == b.Size {
		if progress != nil {
			progress(b.Size)
		}
		return nil
	}
	rc, _, err := src.GetBlob(ctx, types.BlobInfo{Digest: digest.Digest(b.Digest), Size: b.Size}, none.NoCache)
	if err != nil {
		return classify(fmt.Errorf("blob %s: %w", b.Digest, err))
	}
	defer rc.Close()
	return s.putBlob(ctx, rc, b, progress)
}

// putBlob writes r to the store as blob b, checking size and digest
// before the blob becomes visible (tmp file, then rename).
func (s *Store) putBlob(ctx context.Context, r io.Reader, b blobRef, progress func(int64)) error {
	path := s.blobPath(b.Digest)
	if fi, err := os.Stat(path); err == nil && fi.Size() == b.Size {
		return nil
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "blob-")
	if err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := copyCtx(ctx, io.MultiWriter(f, h), io.LimitReader(r, b.Size+1), progress)
	if err != nil {
		return classify(fmt.Errorf("blob %s: %w", b.Digest, err))
	}
	if n != b.Size {
		return fmt.Errorf("%w: blob %s: got %d bytes, want %d", ErrInvalidImage, b.Digest, n, b.Size)
	}
	if got := Digest(sha256Prefix + hex.EncodeToString(h.Sum(nil))); got != b.Digest {
		return fmt.Errorf("%w: blob %s: content has digest %s", ErrInvalidImage, b.Digest, got)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	return nil
}

// verifyDiffID checks that layer blob d decompresses to a tar with digest
// want, and records the result so that later pulls skip the work.
func (s *Store) verifyDiffID(ctx context.Context, d, want Digest) error {
	rec := filepath.Join(s.dir, "diffids", "sha256", d.Hex())
	if b, err := os.ReadFile(rec); err == nil && string(b) == string(want) {
		return nil
	}
	rc, err := openUncompressed(s.blobPath(d), want)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := copyCtx(ctx, io.Discard, rc, nil); err != nil {
		if ctx.Err() == nil {
			return fmt.Errorf("%w: layer %s: %s", ErrInvalidImage, d, err.Error())
		}
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, "tmp"), rec, []byte(want))
}

type byteReader struct {
	b []byte
}

func bytesReader(b []byte) io.Reader { return &byteReader{b: b} }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
