// SPDX-License-Identifier: Apache-2.0

// Command mkrootfs writes the busybox test image (internal/testimages) as a
// root filesystem image the way a sandbox gets one: pulled into an image
// store with pkg/oci, its layers converted by pkg/rootfs. The e2e tests boot
// it to check the whole image path against the real guest kernel.
//
//	mkrootfs -o build/busybox-rootfs.erofs
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/testimages"
	"github.com/microsandbox-go/microsandbox/pkg/oci"
	"github.com/microsandbox-go/microsandbox/pkg/rootfs"
)

func main() {
	out := flag.String("o", "busybox-rootfs.erofs", "output image")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx, *out); err != nil {
		fmt.Fprintf(os.Stderr, "mkrootfs: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out string) error {
	layout, err := testimages.Busybox(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "mkrootfs-store-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := oci.New(oci.Config{Dir: dir})
	if err != nil {
		return err
	}
	im, err := store.Pull(ctx, layout.Ref("busybox"), oci.PullOptions{})
	if err != nil {
		return err
	}
	var layers []io.Reader
	for _, l := range im.Layers() {
		rc, err := l.Uncompressed(ctx)
		if err != nil {
			return err
		}
		defer rc.Close()
		layers = append(layers, rc)
	}
	st, err := rootfs.BuildFile(ctx, layers, out, rootfs.Options{})
	if err != nil {
		return err
	}
	fmt.Printf("mkrootfs: %s (%s): %+v\n", out, im.Digest(), st)
	return nil
}
