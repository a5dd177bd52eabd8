// SPDX-License-Identifier: Apache-2.0

package ext4fmt_test

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/rootfs/ext4fmt"
)

// allocated returns the bytes the host file system has allocated to path
// (st_blocks, 512-byte units).
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// formatter makes an image of size bytes at path.
type formatter struct {
	name   string
	format func(t testing.TB, path string, size int64)
}

var formatters = []formatter{
	{"ext4fmt", func(t testing.TB, path string, size int64) {
		if err := ext4fmt.FormatFile(path, size, ext4fmt.Options{Label: "msb-upper"}); err != nil {
			t.Fatal(err)
		}
	}},
	// The flags pkg/sandbox passes to mkfs.ext4 today.
	{"mkfs.ext4", func(t testing.TB, path string, size int64) {
		mkfs := e2fsprogs(t, "mkfs.ext4")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		run(t, mkfs, "-q", "-F", "-L", "msb-upper", "-m", "0",
			"-E", "lazy_itable_init=1,lazy_journal_init=1", path)
	}},
}

// TestSparse checks that a 4 GiB image stays a few hundred KiB on the host
// and that Format replaces whatever the file held, then logs time and
// allocation beside mkfs.ext4's.
func TestSparse(t *testing.T) {
	const size = 4 << 30
	img := filepath.Join(t.TempDir(), "disk.img")
	junk := bytes.Repeat([]byte{0xA5}, 1<<20)
	if err := os.WriteFile(img, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(junk, 1<<30); err != nil { // a stale "inode table"
		t.Fatal(err)
	}
	if err := ext4fmt.Format(f, size, ext4fmt.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := allocated(t, img); got > 1<<20 {
		t.Errorf("4 GiB image allocates %d bytes on the host, want at most 1 MiB", got)
	}
	if lookE2fsprogs("e2fsck") != "" {
		fsck(t, img)
	}

	for _, fm := range formatters {
		t.Run(fm.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk.img")
			start := time.Now()
			fm.format(t, p, size)
			t.Logf("%s 4 GiB: formatted in %v, %d KiB allocated", fm.name, time.Since(start).Round(time.Microsecond), allocated(t, p)>>10)
		})
	}
}

// BenchmarkFormat formats 4 GiB images with each formatter and reports the
// host bytes each image allocates.
func BenchmarkFormat(b *testing.B) {
	for _, fm := range formatters {
		b.Run(fm.name, func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "disk.img")
			for b.Loop() {
				fm.format(b, p, 4<<30)
			}
			b.ReportMetric(float64(allocated(b, p)), "alloc-bytes")
		})
	}
}
