// SPDX-License-Identifier: Apache-2.0

package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Build applies layers (uncompressed tar streams, bottom first) to an empty
// tree and writes the EROFS image to out, sequentially. See Tree.Apply for
// the layer semantics and checks. On error out holds a partial image.
func Build(ctx context.Context, layers []io.Reader, out io.Writer, opts Options) (Stats, error) {
	t := NewTree(opts)
	defer t.Close()
	for _, l := range layers {
		if err := t.Apply(ctx, l); err != nil {
			return t.Stats(), err
		}
	}
	return t.WriteImage(ctx, out)
}

// BuildFile is Build into the file at path. The image is written to a
// temporary file beside path, synced, made read-only (0444) and renamed
// over path, so path either holds a complete image or is untouched.
func BuildFile(ctx context.Context, layers []io.Reader, path string, opts Options) (st Stats, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return st, fmt.Errorf("rootfs: create image: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if st, err = Build(ctx, layers, f, opts); err != nil {
		return st, err
	}
	if err = errors.Join(f.Sync(), f.Chmod(0o444), f.Close()); err != nil {
		return st, fmt.Errorf("rootfs: finish image: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return st, fmt.Errorf("rootfs: finish image: %w", err)
	}
	return st, nil
}
