// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command sharebench compares the two ways to share a host directory
// with a guest: virtio-fs (package fs, our FUSE server) against virtio-9p
// (package p9, a 9P2000.L server), measured in one guest on the same
// KVM, kernel and initramfs (make bench runs it inside the test harness).
// It settles issue #8's choice of the sandbox's sharing device; the
// result is recorded in the doc of package fs.
//
// It boots one pkg/vmm machine with both devices, each over a host temp
// dir of its own (tags fs0 and p9), and tests/guestinit with its share
// check as /init. For each device the guest mounts the share (9p with
// trans=virtio,version=9p2000.L,msize=262144) and times, on its own
// clock: creating -files files in directories of 100 (create), walking
// and lstat-ing them after dropping the guest's caches (stat), writing
// -mib MiB to one file sequentially and fsyncing it (write), and reading
// it back after dropping caches (read). The host checks that the files
// and bytes arrived in both directories and prints each phase's time and
// the ratio virtio-fs/9p: below 1.0 means virtio-fs is faster.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/p9"
	"github.com/microsandbox-go/microsandbox/tests/benchpeer"
)

var phases = []string{"create", "stat", "write", "read"}

// stallAfter is how long the guest may print nothing before the host
// dumps its goroutines: a stalled run then says which side waits.
var stallAfter = flag.Duration("stall-dump", 2*time.Minute, "dump the host's goroutines once the guest console is silent this long (0: never)")

func main() {
	var (
		kernel  = flag.String("kernel", "vmlinux", "guest vmlinux")
		init    = flag.String("init", "guestinit", "static /init for the guest")
		files   = flag.Int("files", 10000, "files the guest creates and stats on each share")
		mib     = flag.Int("mib", 256, "MiB the guest writes and reads back on each share")
		memMiB  = flag.Int("mem", 512, "guest memory in MiB")
		timeout = flag.Duration("vm-timeout", 25*time.Minute, "limit for the machine's whole run")
	)
	flag.Parse()
	if *files < 1 || *mib < 1 || *memMiB < 1 {
		fmt.Fprintln(os.Stderr, "sharebench: -files, -mib and -mem must be positive")
		os.Exit(2)
	}
	if err := bench(*kernel, *init, *files, *mib, *memMiB, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "sharebench: %v\n", err)
		os.Exit(1)
	}
}

func bench(kernel, init string, files, mib, memMiB int, timeout time.Duration) error {
	// The FUSE server holds one host fd per node the guest holds (all
	// -files of them after the create phase): raise the limit, as root
	// may, past the usual hard limit of 4096.
	want := uint64(4*files + 4096)
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < want {
		lim.Cur, lim.Max = want, max(lim.Max, want)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", want, err)
		}
	}
	dir, err := os.MkdirTemp("", "sharebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := benchpeer.WriteInitramfs(initrd, init); err != nil {
		return err
	}
	fsDir, p9Dir := filepath.Join(dir, "fs0"), filepath.Join(dir, "p9")
	for _, d := range []string{fsDir, p9Dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	fsDev, err := fs.New(fs.Config{Tag: "fs0", Share: fuse.Config{
		Root: fsDir, GuestOwnership: true, MaxNodes: 2*files + 1024,
	}})
	if err != nil {
		return err
	}
	defer fsDev.Close()
	p9Dev, err := p9.New(p9.Config{Tag: "p9", Root: p9Dir})
	if err != nil {
		return err
	}
	defer p9Dev.Close()

	g := &guest{values: map[string]string{}}
	m, err := vmm.New(vmm.Config{
		Kernel: kernel, Initrd: initrd, MemoryMiB: memMiB,
		Cmdline: fmt.Sprintf("msb_end=reboot msb_checks=share msb_share_files=%d msb_share_mib=%d", files, mib),
		Console: g, Devices: []virtio.Device{fsDev, p9Dev},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stopWatch := g.watch(*stallAfter, m)
	start := time.Now()
	exit, err := m.Run(ctx)
	stopWatch()
	g.flush()
	fmt.Printf("vm: %v after %v\n", exit, time.Since(start).Round(time.Millisecond))
	if err != nil {
		return err
	}
	if e := g.get("share_error"); e != "" {
		return fmt.Errorf("guest: share_error=%s", e)
	}
	if g.get("done") != "1" {
		return fmt.Errorf("guest did not finish (no done line); console tail:\n%s", g.tailText())
	}
	for _, c := range []struct{ name, dir string }{{"virtiofs", fsDir}, {"9p", p9Dir}} {
		if got := g.get("share_" + c.name + "_files"); got != strconv.Itoa(files) {
			return fmt.Errorf("%s: guest walked %s files, want %d", c.name, got, files)
		}
		if got := g.get("share_" + c.name + "_bytes"); got != strconv.Itoa(mib<<20) {
			return fmt.Errorf("%s: guest read %s bytes, want %d", c.name, got, mib<<20)
		}
		n, err := countFiles(filepath.Join(c.dir, "tree"))
		if err != nil {
			return fmt.Errorf("%s: host: %w", c.name, err)
		}
		fi, err := os.Stat(filepath.Join(c.dir, "big"))
		if err != nil {
			return fmt.Errorf("%s: host: %w", c.name, err)
		}
		if n != files || fi.Size() != int64(mib)<<20 {
			return fmt.Errorf("%s: host sees %d files and %d bytes, want %d and %d", c.name, n, fi.Size(), files, mib<<20)
		}
	}
	fmt.Printf("metrics: virtio-fs requests %d; virtio-9p requests %d replies %d bad %d\n",
		fsDev.Metrics().Requests.Load(), p9Dev.Metrics().Requests.Load(),
		p9Dev.Metrics().Replies.Load(), p9Dev.Metrics().BadRequests.Load())
	for _, ph := range phases {
		a, b := g.ns("share_virtiofs_"+ph+"_ns"), g.ns("share_9p_"+ph+"_ns")
		if a <= 0 || b <= 0 {
			return fmt.Errorf("phase %s: no time reported", ph)
		}
		name := fmt.Sprintf("share-%s-%dfiles", ph, files)
		extra := ""
		if ph == "write" || ph == "read" {
			name = fmt.Sprintf("share-%s-%dMiB", ph, mib)
			extra = fmt.Sprintf(" (%.1f vs %.1f MiB/s)", float64(mib)/a.Seconds(), float64(mib)/b.Seconds())
		}
		fmt.Printf("bench %s: virtio-fs %v, virtio-9p %v%s, ratio virtio-fs/9p %.2f\n",
			name, a.Round(time.Millisecond), b.Round(time.Millisecond), extra, a.Seconds()/b.Seconds())
	}
	return nil
}

func countFiles(dir string) (int, error) {
	n := 0
	subs, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, s := range subs {
		es, err := os.ReadDir(filepath.Join(dir, s.Name()))
		if err != nil {
			return 0, err
		}
		n += len(es)
	}
	return n, nil
}

// guest collects the console: it prints guestinit's report lines as they
// come and keeps their values. Writes come from vCPU goroutines.
type guest struct {
	mu     sync.Mutex
	line   []byte
	values map[string]string
	tail   []string // the last console lines, for a failure report
	last   time.Time
}

// watch prints the vCPUs' states and every goroutine's stack once when the console has been
// silent for d, until the returned stop is called.
func (g *guest) watch(d time.Duration, m *vmm.Machine) (stop func()) {
	if d <= 0 {
		return func() {}
	}
	g.mu.Lock()
	g.last = time.Now()
	g.mu.Unlock()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			g.mu.Lock()
			silent := time.Since(g.last)
			g.mu.Unlock()
			if silent >= d {
				fmt.Printf("sharebench: guest silent for %v\n", silent.Round(time.Second))
				for _, st := range m.Inspect(context.Background()) {
					fmt.Printf("sharebench: %v\n", st)
				}
				fmt.Println("sharebench: host goroutines:")
				pprof.Lookup("goroutine").WriteTo(os.Stdout, 2)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (g *guest) tailText() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.tail, "\n")
}

// Write implements io.Writer.
func (g *guest) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range p {
		if c != '\n' {
			if len(g.line) < 4096 {
				g.line = append(g.line, c)
			}
			continue
		}
		g.lineLocked()
	}
	return len(p), nil
}

func (g *guest) lineLocked() {
	l := strings.TrimRight(string(g.line), "\r")
	g.line = g.line[:0]
	g.last = time.Now()
	if strings.TrimSpace(l) != "" {
		if len(g.tail) == 40 {
			g.tail = g.tail[1:]
		}
		g.tail = append(g.tail, l)
	}
	if i := strings.Index(l, "guestinit: "); i >= 0 {
		l = l[i:]
		fmt.Println(l)
		if k, v, ok := strings.Cut(strings.TrimPrefix(l, "guestinit: "), "="); ok {
			g.values[k] = v
		}
	} else if strings.Contains(l, "Kernel panic") || strings.Contains(l, "9p") || strings.Contains(l, "virtio") {
		fmt.Println("console:", l)
	}
}

func (g *guest) flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.line) > 0 {
		g.lineLocked()
	}
}

func (g *guest) get(key string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.values[key]
}

func (g *guest) ns(key string) time.Duration {
	v, _ := strconv.ParseInt(g.get(key), 10, 64)
	return time.Duration(v)
}

var _ io.Writer = (*guest)(nil)
