// SPDX-License-Identifier: Apache-2.0

package ext4fmt_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs/ext4fmt"
)

// e2fsprogs returns the path of an e2fsprogs tool, skipping the test when it
// is missing (it is in /sbin, which a non-root PATH may lack).
func e2fsprogs(t testing.TB, name string) string {
	t.Helper()
	p := lookE2fsprogs(name)
	if p == "" {
		t.Skipf("%s not found: install e2fsprogs to check images against it", name)
	}
	return p
}

// lookE2fsprogs returns the path of an e2fsprogs tool or "" without it.
func lookE2fsprogs(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/sbin", "/usr/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// run runs a command and fails the test if it does not exit 0.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fsckSummary is e2fsck's last line, "label: 11/1024 files (0.0%
// non-contiguous), 73/4096 blocks": what it counted in use.
type fsckSummary struct {
	usedInodes, inodes, usedBlocks, blocks int64
}

// fsck runs e2fsck -fn (force a full check, change nothing), which exits 0
// only for a clean file system, and returns its counts. e2fsck does not
// complain about wrong free counts in the superblock (it would fix them
// silently), so callers compare the counts with dumpe2fs -h.
func fsck(t testing.TB, img string) fsckSummary {
	t.Helper()
	out := run(t, e2fsprogs(t, "e2fsck"), "-fn", img)
	if !strings.Contains(out, "Pass 5: Checking group summary information") {
		t.Fatalf("e2fsck -fn %s did not finish pass 5:\n%s", img, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	_, counts, _ := strings.Cut(last, ": ")
	var s fsckSummary
	var pct float64
	if _, err := fmt.Sscanf(counts, "%d/%d files (%f%% non-contiguous), %d/%d blocks",
		&s.usedInodes, &s.inodes, &pct, &s.usedBlocks, &s.blocks); err != nil {
		t.Fatalf("e2fsck -fn %s: summary %q: %v", img, last, err)
	}
	return s
}

// checkCounts compares the superblock's counts with what e2fsck counted.
func checkCounts(t testing.TB, img string, sb map[string]string, s fsckSummary) {
	t.Helper()
	for k, want := range map[string]int64{
		"Inode count": s.inodes,
		"Block count": s.blocks,
		"Free inodes": s.inodes - s.usedInodes,
		"Free blocks": s.blocks - s.usedBlocks,
	} {
		if got := atoi(t, sb[k]); got != want {
			t.Errorf("%s: dumpe2fs -h: %s = %d, e2fsck counted %d", img, k, got, want)
		}
	}
}

// superblock returns dumpe2fs -h's "Key: value" lines as a map.
func superblock(t testing.TB, img string) map[string]string {
	t.Helper()
	out := run(t, e2fsprogs(t, "dumpe2fs"), "-h", img)
	m := make(map[string]string)
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

var testUUID = [16]byte{0x6d, 0x73, 0x62, 0x2d, 0x75, 0x70, 0x70, 0x65, 0x72, 0x2d, 0x74, 0x65, 0x73, 0x74, 0x30, 0x31}

const testUUIDString = "6d73622d-7570-7065-722d-746573743031"

func TestE2fsck(t *testing.T) {
	e2fsprogs(t, "e2fsck")
	sizes := []struct {
		name  string
		size  int64
		ratio int64
	}{
		{"min", ext4fmt.MinSize, 0},
		{"16MiB", 16 << 20, 0},
		{"100MiB", 100 << 20, 0},
		{"100MiB+123", 100<<20 + 123, 0},
		{"1000MiB+4096", 1000<<20 + 4096, 0},
		{"1GiB", 1 << 30, 0},
		{"1GiB one inode per block", 1 << 30, ext4fmt.MinInodeRatio},
		{"4GiB", 4 << 30, 0},
		{"dropped last group", 128<<20 + 10*4096, 0},
		{"short last group", 256<<20 + 600*4096, 0},
		{"20GiB", 20 << 30, 0},
		{"1TiB", 1 << 40, 0}, // 8192 groups, 64 descriptor blocks per copy
	}
	for _, tt := range sizes {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			if err := ext4fmt.FormatFile(img, tt.size, ext4fmt.Options{Label: "msb-upper", UUID: testUUID, InodeRatio: tt.ratio}); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(img); err != nil || fi.Size() != tt.size {
				t.Fatalf("stat %s = %v, %v; want %d bytes", img, fi, err, tt.size)
			}
			sum := fsck(t, img)
			sb := superblock(t, img)
			checkCounts(t, img, sb, sum)
			if sum.usedInodes != 11 {
				t.Errorf("e2fsck counted %d inodes in use, want 11 (reserved, root, lost+found)", sum.usedInodes)
			}
			for k, want := range map[string]string{
				"Filesystem volume name":  "msb-upper",
				"Filesystem UUID":         testUUIDString,
				"Filesystem magic number": "0xEF53",
				"Filesystem revision #":   "1 (dynamic)",
				"Filesystem features":     "ext_attr dir_index filetype extent sparse_super large_file huge_file uninit_bg dir_nlink extra_isize",
				"Filesystem state":        "clean",
				"Block size":              "4096",
				"Inode size":              "256",
				"Reserved block count":    "0",
				"Free inodes":             fmt.Sprint(atoi(t, sb["Inode count"]) - 11),
			} {
				if got := sb[k]; got != want {
					t.Errorf("dumpe2fs -h: %s = %q, want %q", k, got, want)
				}
			}
			blocks := atoi(t, sb["Block count"])
			if max := tt.size / 4096; blocks > max || blocks <= max-32768 {
				t.Errorf("dumpe2fs -h: Block count = %d, want at most %d, less than one group short", blocks, max)
			}

			debugfs := e2fsprogs(t, "debugfs")
			ls := run(t, debugfs, "-R", "ls -l /", img)
			if !strings.Contains(ls, " 40700 (2)      0      0   16384 ") || !strings.Contains(ls, " lost+found") {
				t.Errorf("debugfs ls -l /: no 0700 root-owned 16 KiB lost+found:\n%s", ls)
			}
			st := run(t, debugfs, "-R", "stat /", img)
			if !strings.Contains(st, "Mode:  0755") || !strings.Contains(st, "User:     0   Group:     0") ||
				!strings.Contains(st, "Links: 3") {
				t.Errorf("debugfs stat /: want mode 0755, owner 0:0, 3 links:\n%s", st)
			}
		})
	}
}

func atoi(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("dumpe2fs -h: %v", err)
	}
	return n
}

func TestRandomUUID(t *testing.T) {
	e2fsprogs(t, "dumpe2fs")
	dir := t.TempDir()
	seen := make(map[string]bool)
	for i := range 2 {
		img := filepath.Join(dir, fmt.Sprint(i))
		if err := ext4fmt.FormatFile(img, 16<<20, ext4fmt.Options{}); err != nil {
			t.Fatal(err)
		}
		sb := superblock(t, img)
		u := sb["Filesystem UUID"]
		if len(u) != 36 || u[14] != '4' || seen[u] || sb["Filesystem volume name"] != "<none>" {
			t.Errorf("image %d: UUID %q, label %q; want a fresh version 4 UUID and no label", i, u, sb["Filesystem volume name"])
		}
		seen[u] = true
	}
}

func TestFormatErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := ext4fmt.FormatFile(img, 1<<20, ext4fmt.Options{}); !errors.Is(err, ext4fmt.ErrInvalidSize) {
		t.Errorf("FormatFile(1 MiB) = %v, want ErrInvalidSize", err)
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FormatFile(1 MiB) left %s behind: %v", img, err)
	}
	if err := ext4fmt.FormatFile(img, 16<<20, ext4fmt.Options{Label: strings.Repeat("x", 17)}); !errors.Is(err, ext4fmt.ErrInvalidLabel) {
		t.Errorf("FormatFile(label of 17 bytes) = %v, want ErrInvalidLabel", err)
	}
	if err := ext4fmt.FormatFile(filepath.Join(dir, "missing", "disk.img"), 16<<20, ext4fmt.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FormatFile(in a missing directory) = %v, want ErrNotExist", err)
	}
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	if err := ext4fmt.Format(f, 16<<20, ext4fmt.Options{}); !errors.Is(err, ext4fmt.ErrNotRegular) {
		t.Errorf("Format(%s) = %v, want ErrNotRegular", os.DevNull, err)
	}
}
