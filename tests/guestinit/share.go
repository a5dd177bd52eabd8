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
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/tests/guestproto"
)

// checkShare times one workload on the file-sharing devices the host
// offers (tests/sharebench): virtio-fs tagged fs0 and virtio-9p tagged p9,
// or those named in msb_share_devices (comma-separated, in order). For each
// it creates msb_share_creates files (default 1000) in new/, walks and
// lstats, with cold caches, the files the host put in tree/ before the
// boot, writes msb_share_mib MiB (default 256) to one file sequentially
// and reads it back with cold caches. msb_share_from names the first phase
// to run: the host runs the rest of a workload in a new boot after a boot
// was lost, over what the earlier phases left in the share. It reports
// share_<dev>_<phase>_ns and share_<dev>_{files,bytes} per device, or
// share_error.
func checkShare() {
	creates, err := strconv.Atoi(param("msb_share_creates"))
	if err != nil || creates < 1 {
		creates = 1000
	}
	mib, err := strconv.Atoi(param("msb_share_mib"))
	if err != nil || mib < 1 {
		mib = 256
	}
	from := slices.Index(sharePhases, param("msb_share_from"))
	if from < 0 {
		from = 0
	}
	want := []string{"virtiofs", "9p"}
	if v := param("msb_share_devices"); v != "" {
		want = strings.Split(v, ",")
	}
	devices := map[string]struct{ fstype, tag, opts string }{
		"virtiofs": {"virtiofs", "fs0", ""},
		"9p":       {"9p", "p9", "trans=virtio,version=9p2000.L,msize=262144"},
	}
	for _, name := range want {
		s, ok := devices[name]
		if !ok {
			report("share_error", "unknown device %q in msb_share_devices", name)
			return
		}
		dir := "/mnt/" + name
		os.MkdirAll(dir, 0o755)
		if err := unix.Mount(s.tag, dir, s.fstype, 0, s.opts); err != nil {
			report("share_error", "mount %s %s: %v", s.fstype, s.tag, err)
			return
		}
		if err := shareWorkload(name, dir, creates, mib, from); err != nil {
			report("share_error", "%s: %v", name, err)
			return
		}
		if err := unix.Unmount(dir, 0); err != nil {
			report("share_error", "unmount %s: %v", dir, err)
			return
		}
	}
}

// sharePhases are the workload's phases in order.
var sharePhases = []string{"create", "stat", "write", "read"}

func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// shareWorkload runs the workload's phases from sharePhases[from] on.
func shareWorkload(name, dir string, creates, mib, from int) error {
	phase := func(p string, fn func() error) error {
		if slices.Index(sharePhases, p) < from {
			return nil
		}
		start := time.Now()
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		report(fmt.Sprintf("share_%s_%s_ns", name, p), "%d", time.Since(start).Nanoseconds())
		return nil
	}
	if err := phase("create", func() error {
		return guestproto.WriteTree(filepath.Join(dir, "new"), creates)
	}); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	n := 0
	tree := filepath.Join(dir, "tree")
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
