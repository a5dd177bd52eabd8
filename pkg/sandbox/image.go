// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/microsandbox-go/microsandbox/pkg/oci"
	"github.com/microsandbox-go/microsandbox/pkg/rootfs"
)

// prepareImage makes the image of cfg available in the image store (by its
// pull policy) and returns the image and the path of its EROFS root, built
// once per image digest: concurrent creators serialize on a lock file and
// the later ones find the image built.
func prepareImage(ctx context.Context, rt *Runtime, cfg *Config) (oci.Image, string, error) {
	return prepareImageProgress(ctx, rt, cfg, nil)
}

// prepareImageProgress is prepareImage reporting pull progress.
func prepareImageProgress(ctx context.Context, rt *Runtime, cfg *Config, progress func(oci.Progress)) (oci.Image, string, error) {
	ref := cfg.Image
	store, err := oci.New(oci.Config{Dir: rt.imagesDir()})
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrImage, err)
	}
	opts := oci.PullOptions{Policy: oci.PullIfMissing, Progress: progress}
	switch cfg.PullPolicy {
	case "always":
		opts.Policy = oci.PullAlways
	case "never":
		opts.Policy = oci.PullNever
	}
	if r := cfg.Registry; r != nil {
		if r.Username != "" || r.Password != "" {
			opts.Credentials = &oci.Credentials{Username: r.Username, Password: r.Password}
		}
		opts.Insecure, opts.CACertificates = r.Insecure, r.CACertificates
	}
	im, err := store.Pull(ctx, ref, opts)
	if err != nil {
		return nil, "", fmt.Errorf("%w: pull %s: %w", ErrImage, ref, err)
	}
	dir := rt.rootfsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrImage, err)
	}
	path := filepath.Join(dir, im.Digest().Hex()+".erofs")
	if _, err := os.Stat(path); err == nil {
		return im, path, nil
	}
	unlock, err := flockPath(ctx, filepath.Join(dir, im.Digest().Hex()+".lock"))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil {
		return im, path, nil
	}
	var layers []io.Reader
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for _, l := range im.Layers() {
		rc, err := l.Uncompressed(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("%w: layer %s: %w", ErrImage, l.Digest(), err)
		}
		closers = append(closers, rc)
		layers = append(layers, rc)
	}
	if _, err := rootfs.BuildFile(ctx, layers, path, rootfs.Options{TempDir: dir}); err != nil {
		return nil, "", fmt.Errorf("%w: build root filesystem of %s: %w", ErrImage, ref, err)
	}
	return im, path, nil
}

// flockPath takes an exclusive flock on path (created if missing), polling
// so that ctx can end the wait.
func flockPath(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sandbox: lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("sandbox: lock %s: %w", path, err)
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			f.Close()
			return nil, err
		}
	}
}
