// SPDX-License-Identifier: Apache-2.0

// Command mkoci writes a test image of internal/testimages as an OCI image
// layout packed in one tar file, so that the e2e tests get it inside the
// harness, where there is no apt or debootstrap to build it. The image has
// the name of the -image flag in the layout: "busybox" (the default) or
// "python" (debootstrap; needs root).
//
//	mkoci -o build/busybox-oci.tar
//	mkoci -image python -o build/python-oci.tar
package main

import (
	"archive/tar"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/testimages"
)

func main() {
	out := flag.String("o", "busybox-oci.tar", "output tar file")
	image := flag.String("image", "busybox", "image to write: busybox or python")
	flag.Parse()
	build, ok := builders[*image]
	if !ok {
		fmt.Fprintf(os.Stderr, "mkoci: unknown -image %q (busybox or python)\n", *image)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx, build, *out); err != nil {
		fmt.Fprintf(os.Stderr, "mkoci: %v\n", err)
		os.Exit(1)
	}
}

var builders = map[string]func(context.Context) (testimages.Layout, error){
	"busybox": testimages.Busybox,
	"python":  testimages.Python,
}

func run(ctx context.Context, build func(context.Context) (testimages.Layout, error), out string) (err error) {
	layout, err := build(ctx)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".mkoci-*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(layout.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(layout.Dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsDir() && !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a file or directory", p)
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err = errors.Join(err, tw.Close(), f.Sync(), f.Close()); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), out); err != nil {
		return err
	}
	fmt.Printf("mkoci: %s from %s\n", out, layout.Dir)
	return nil
}
