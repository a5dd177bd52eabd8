// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/oci"
	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// ImageHandle describes a stored image.
type ImageHandle struct {
	Reference string
	Digest    string
	Platform  string
	// Size is the stored (compressed) size in bytes.
	Size   int64
	Layers int
	// Created is from the image's config; Pulled is when it was stored.
	Created, Pulled time.Time
	// InUseBy names the sandboxes that hold the image.
	InUseBy []string
}

// ImageDetail is an image with its runtime configuration.
type ImageDetail struct {
	ImageHandle
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	User       string
	Labels     map[string]string
}

// PullProgress reports the bytes of one layer as a pull stores them.
type PullProgress struct {
	Reference string
	Layer     string
	// Index is the layer's position, bottom first, of Count layers.
	Index, Count int
	Done, Total  int64
	Cached       bool
}

// PullOption configures Image.Pull.
type PullOption func(*pullOptions)

type pullOptions struct {
	progress func(PullProgress)
	registry registryOptions
}

// WithPullProgress calls fn as layer bytes arrive (from the pulling
// goroutine).
func WithPullProgress(fn func(PullProgress)) PullOption {
	return func(o *pullOptions) { o.progress = fn }
}

// WithPullAuth pulls with these credentials.
func WithPullAuth(a RegistryAuth) PullOption {
	return func(o *pullOptions) { o.registry.auth, o.registry.hasConfig = &a, true }
}

// WithPullInsecure allows plain HTTP and unverified TLS.
func WithPullInsecure() PullOption {
	return func(o *pullOptions) { o.registry.insecure, o.registry.hasConfig = true, true }
}

type imageFactory struct{}

// Image manages the image store of MSB_HOME.
var Image imageFactory

func summaryHandle(s oci.Summary) *ImageHandle {
	h := &ImageHandle{
		Reference: s.Reference, Digest: s.Digest.String(), Platform: s.Platform.String(),
		Size: s.Size, Layers: s.Layers, Created: s.Created, Pulled: s.Pulled,
	}
	for _, holder := range s.Holders {
		h.InUseBy = append(h.InUseBy, strings.TrimPrefix(holder, "sandbox:"))
	}
	return h
}

// Pull fetches ref (always from its source) and prepares its root
// filesystem, so that sandboxes of it start without pulling.
func (imageFactory) Pull(ctx context.Context, ref string, opts ...PullOption) (*ImageDetail, error) {
	var o pullOptions
	for _, f := range opts {
		f(&o)
	}
	reg, err := o.registry.sandboxRegistry()
	if err != nil {
		return nil, err
	}
	var progress func(oci.Progress)
	if o.progress != nil {
		progress = func(p oci.Progress) {
			o.progress(PullProgress{Reference: p.Reference, Layer: p.Layer.String(), Index: p.Index, Count: p.Count, Done: p.Done, Total: p.Total, Cached: p.Cached})
		}
	}
	im, err := sandbox.PullImage(ctx, sandbox.DefaultRuntime(), ref, reg, progress)
	if err != nil {
		return nil, wrap(err)
	}
	return Image.Inspect(ctx, im.Digest().String())
}

// Get looks up a stored image by reference or digest.
func (imageFactory) Get(ctx context.Context, ref string) (*ImageHandle, error) {
	d, err := Image.Inspect(ctx, ref)
	if err != nil {
		return nil, err
	}
	return &d.ImageHandle, nil
}

// List returns the stored images.
func (imageFactory) List(ctx context.Context) ([]*ImageHandle, error) {
	s, err := sandbox.Images(sandbox.DefaultRuntime())
	if err != nil {
		return nil, wrap(err)
	}
	list, err := s.List(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]*ImageHandle, 0, len(list))
	for _, sum := range list {
		out = append(out, summaryHandle(sum))
	}
	return out, nil
}

// Inspect returns a stored image with its configuration; a missing one is
// ErrImageNotFound.
func (imageFactory) Inspect(ctx context.Context, ref string) (*ImageDetail, error) {
	s, err := sandbox.Images(sandbox.DefaultRuntime())
	if err != nil {
		return nil, wrap(err)
	}
	im, err := s.Get(ctx, ref, oci.Platform{})
	if err != nil {
		return nil, imageErr(err)
	}
	list, err := s.List(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	d := &ImageDetail{}
	for _, sum := range list {
		if sum.Digest == im.Digest() {
			d.ImageHandle = *summaryHandle(sum)
			break
		}
	}
	c := im.Config()
	d.Env, d.Entrypoint, d.Cmd, d.WorkingDir, d.User, d.Labels = c.Env, c.Entrypoint, c.Cmd, c.WorkingDir, c.User, c.Labels
	return d, nil
}

// Remove removes a stored image; one a sandbox holds is ErrImageInUse
// unless force.
func (imageFactory) Remove(ctx context.Context, ref string, force bool) error {
	err := sandbox.RemoveImage(ctx, sandbox.DefaultRuntime(), ref, force)
	if err != nil {
		return imageErr(err)
	}
	return nil
}

// ImagePruneReport says what Prune removed.
type ImagePruneReport struct {
	ImagesRemoved, BlobsRemoved int
	BytesReclaimed              int64
}

// Prune removes every image no sandbox holds.
func (imageFactory) Prune(ctx context.Context) (*ImagePruneReport, error) {
	rep, err := sandbox.PruneImages(ctx, sandbox.DefaultRuntime())
	if err != nil {
		return nil, wrap(err)
	}
	return &ImagePruneReport{ImagesRemoved: rep.ImagesRemoved, BlobsRemoved: rep.BlobsRemoved, BytesReclaimed: rep.BytesReclaimed}, nil
}

// imageErr maps the store's error classes.
func imageErr(err error) error {
	switch {
	case errors.Is(err, oci.ErrNotFound):
		return &Error{Kind: ErrImageNotFound, Message: err.Error(), Cause: err}
	case errors.Is(err, oci.ErrInUse):
		return &Error{Kind: ErrImageInUse, Message: err.Error(), Cause: err}
	case errors.Is(err, oci.ErrInvalidReference):
		return &Error{Kind: ErrInvalidArgument, Message: err.Error(), Cause: err}
	}
	return wrap(err)
}
