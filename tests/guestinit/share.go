// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// checkShare times one workload on each file-sharing device the host
// offers (tests/sharebench): virtio-fs tagged fs0 and virtio-9p tagged p9.
// For each it creates msb_share_files files (default 10000), walks and
// lstats them with cold caches, writes msb_share_mib MiB (default 256) to
// one file sequentially and reads it back with cold caches. It reports
// share_<dev>_<phase>_ns and share_<dev>_{files,bytes} per device, or
// share_error.
func checkShare() {
	files, err := strconv.Atoi(param("msb_share_files"))
	if err != nil || files < 1 {
		files = 10000
	}
	mib, err := strconv.Atoi(param("msb_share_mib"))
	if err != nil || mib < 1 {
		mib = 256
	}
	for _, s := range []struct{ name, fstype, tag, opts string }{
		{"virtiofs", "virtiofs", "fs0", ""},
		{"9p", "9p", "p9", "trans=virtio,version=9p2000.L,msize=262144"},
	} {
		dir := "/mnt/" + s.name
		os.MkdirAll(dir, 0o755)
		if err := unix.Mount(s.tag, dir, s.fstype, 0, s.opts); err != nil {
			report("share_error", "mount %s %s: %v", s.fstype, s.tag, err)
			return
		}
		if err := shareWorkload(s.name, dir, files, mib); err != nil {
			report("share_error", "%s: %v", s.name, err)
			return
		}
		if err := unix.Unmount(dir, 0); err != nil {
			report("share_error", "unmount %s: %v", dir, err)
			return
		}
	}
}

func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

func shareWorkload(name, dir string, files, mib int) error {
	phase := func(p string, fn func() error) error {
		start := time.Now()
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		report(fmt.Sprintf("share_%s_%s_ns", name, p), "%d", time.Since(start).Nanoseconds())
		return nil
	}
	tree := filepath.Join(dir, "tree")
	if err := phase("create", func() error {
		// 100 files a directory, as a source tree spreads them.
		for i := range files {
			sub := filepath.Join(tree, fmt.Sprintf("d%03d", i/100))
			if i%100 == 0 {
				if err := os.MkdirAll(sub, 0o755); err != nil {
					return err
				}
			}
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), []byte("x"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	n := 0
	if err := phase("stat", func() error {
		return filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := os.Lstat(path); err != nil {
				return err
			}
			if !d.IsDir() {
				n++
			}
			return nil
		})
	}); err != nil {
		return err
	}
	report(fmt.Sprintf("share_%s_files", name), "%d", n)

	big := filepath.Join(dir, "big")
	chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
	if err := phase("write", func() error {
		f, err := os.Create(big)
		if err != nil {
			return err
		}
		for range mib {
			if _, err := f.Write(chunk); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	var got int64
	if err := phase("read", func() error {
		f, err := os.Open(big)
		if err != nil {
			return err
		}
		defer f.Close()
		got, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, chunk)
		return err
	}); err != nil {
		return err
	}
	report(fmt.Sprintf("share_%s_bytes", name), "%d", got)
	return nil
}
