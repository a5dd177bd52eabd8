// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/microsandbox-go/microsandbox/pkg/oci"
)

// holderPrefix marks the image holders that are sandboxes ("sandbox:NAME").
const holderPrefix = "sandbox:"

// Images returns the image store under rt.Home.
func Images(rt Runtime) (*oci.Store, error) {
	rt.abs()
	s, err := oci.New(oci.Config{Dir: rt.imagesDir()})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	return s, nil
}

// PullImage pulls ref into the store (policy always) and builds its root
// filesystem, reporting layer progress.
func PullImage(ctx context.Context, rt Runtime, ref string, reg *Registry, progress func(oci.Progress)) (oci.Image, error) {
	rt.abs()
	cfg := Config{Image: ref, PullPolicy: "always", Registry: reg}
	im, _, err := prepareImageProgress(ctx, &rt, &cfg, progress)
	return im, err
}

// RemoveImage removes ref from the store; an image a sandbox holds is
// refused (matching oci.ErrInUse) unless force. Root filesystems of
// images no longer stored are deleted.
func RemoveImage(ctx context.Context, rt Runtime, ref string, force bool) error {
	s, err := Images(rt)
	if err != nil {
		return err
	}
	if err := s.Remove(ctx, ref, force); err != nil {
		return fmt.Errorf("%w: remove %s: %w", ErrImage, ref, err)
	}
	return pruneRootfs(ctx, rt, s)
}

// PruneImages removes every image no sandbox holds, and their root
// filesystems.
func PruneImages(ctx context.Context, rt Runtime) (oci.PruneReport, error) {
	s, err := Images(rt)
	if err != nil {
		return oci.PruneReport{}, err
	}
	rep, err := s.Prune(ctx)
	if err != nil {
		return rep, fmt.Errorf("%w: prune: %w", ErrImage, err)
	}
	return rep, pruneRootfs(ctx, rt, s)
}

// pruneRootfs deletes the EROFS roots of digests the store no longer has.
func pruneRootfs(ctx context.Context, rt Runtime, s *oci.Store) error {
	rt.abs()
	list, err := s.List(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	keep := map[string]bool{}
	for _, im := range list {
		keep[im.Digest.Hex()+".erofs"] = true
	}
	ents, err := os.ReadDir(rt.rootfsDir())
	if err != nil {
		return nil // nothing built yet
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".erofs") && !keep[e.Name()] {
			os.Remove(filepath.Join(rt.rootfsDir(), e.Name()))
		}
	}
	return nil
}

// holdImage marks the sandbox's image in use, so that RemoveImage refuses
// it while the sandbox exists.
func holdImage(ctx context.Context, rt *Runtime, d oci.Digest, name string) error {
	s, err := Images(*rt)
	if err != nil {
		return err
	}
	if err := s.Acquire(ctx, d, holderPrefix+name); err != nil {
		return fmt.Errorf("%w: hold image: %w", ErrImage, err)
	}
	return nil
}

// releaseImage drops the sandbox's hold on its image.
func releaseImage(rt Runtime, st *State) {
	if st.ImageDigest == "" {
		return
	}
	d, err := oci.ParseDigest(st.ImageDigest)
	if err != nil {
		return
	}
	if s, err := Images(rt); err == nil {
		s.Release(context.Background(), d, holderPrefix+st.Name)
	}
}
