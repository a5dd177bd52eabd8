// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command sharebench compares the two ways to share a host directory
// with a guest: virtio-fs (package fs, our FUSE server) against virtio-9p
// (package p9, a 9P2000.L server), measured on the same KVM, kernel and
// initramfs (make bench runs it inside the test harness). It settles issue
// #8's choice of the sandbox's sharing device; the result is recorded in
// the doc of package fs.
//
// For each device it boots a pkg/vmm machine with that device over a host
// temp dir (tag fs0 or p9) and tests/guestinit with its share check as
// /init. The guest mounts the share (9p with
// trans=virtio,version=9p2000.L,msize=262144) and times, on its own clock:
// creating -creates files in directories of 100 (create); walking and
// lstat-ing the -files files the host wrote, 100 a directory, before the
// boot, after dropping the guest's caches (stat); writing -mib MiB to one
// file sequentially and fsyncing it (write); and reading it back after
// dropping caches (read). A boot the harness loses is followed by one that
// starts at the first phase without a time. The host checks that the
// files and bytes arrived and prints each phase's time and the ratio
// virtio-fs/9p: below 1.0 means virtio-fs is faster.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
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
	"github.com/microsandbox-go/microsandbox/tests/guestproto"
)

var phases = []string{"create", "stat", "write", "read"}

// stallAfter is how long the guest may print nothing before the host
// dumps its vCPUs and goroutines and ends the boot: a stalled run then
// says which side waits. The guest prints once a phase, and 9p's slowest
// phase (1 GiB in the nested harness) takes about 5 minutes.
var stallAfter = flag.Duration("stall-dump", 10*time.Minute, "dump the vCPUs and host goroutines, and end the boot, once the guest console is silent this long (0: never)")

func main() {
	var (
		kernel  = flag.String("kernel", "vmlinux", "guest vmlinux")
		init    = flag.String("init", "guestinit", "static /init for the guest")
		files   = flag.Int("files", 10000, "files the host writes into each share and the guest stats")
		creates = flag.Int("creates", 1000, "files the guest creates on each share")
		mib     = flag.Int("mib", 256, "MiB the guest writes and reads back on each share")
		memMiB  = flag.Int("mem", 512, "guest memory in MiB")
		timeout = flag.Duration("vm-timeout", 25*time.Minute, "limit for each machine's run")
		only    = flag.String("only", "", "run one device only, virtiofs or 9p (no ratio is printed)")
	)
	flag.Parse()
	if *files < 1 || *creates < 1 || *mib < 1 || *memMiB < 1 {
		fmt.Fprintln(os.Stderr, "sharebench: -files, -creates, -mib and -mem must be positive")
		os.Exit(2)
	}
	if err := bench(*kernel, *init, workload{*files, *creates, *mib}, *memMiB, *timeout, *only); err != nil {
		fmt.Fprintf(os.Stderr, "sharebench: %v\n", err)
		os.Exit(1)
	}
}

// tries is how many boots one device's workload may take. The nested
// harness now and then kills or wedges a guest (internal/vmtest/doc.go),
// the more likely the more exits a run makes; a lost boot is followed by
// one that starts at the first phase without a time, over what the
// earlier phases left in the share, and the retries are printed.
const tries = 3

// device is one sharing device under test.
type device struct {
	name string // guestinit's name for it: virtiofs or 9p
	dir  string // the host directory it shares
	// new creates the device over dir; requests reads its request count.
	new func() (shareDevice, func() uint64, error)
}

// shareDevice is a virtio device its creator closes.
type shareDevice interface {
	virtio.Device
	Close() error
}

// workload is what the guest does on each share.
type workload struct{ files, creates, mib int }

func bench(kernel, init string, w workload, memMiB int, timeout time.Duration, only string) error {
	files, mib := w.files, w.mib
	// The FUSE server holds one host fd per node the guest holds (every
	// file it created and stat-ed): raise the limit, as root may, past the
	// usual hard limit of 4096.
	want := uint64(4*(files+w.creates) + 4096)
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
	devices := []device{
		{name: "virtiofs", dir: fsDir, new: func() (shareDevice, func() uint64, error) {
			d, err := fs.New(fs.Config{Tag: "fs0", Share: fuse.Config{
				Root: fsDir, GuestOwnership: true, MaxNodes: 2*(files+w.creates) + 1024,
			}})
			if err != nil {
				return nil, nil, err
			}
			return d, func() uint64 { return d.Metrics().Requests.Load() }, nil
		}},
		{name: "9p", dir: p9Dir, new: func() (shareDevice, func() uint64, error) {
			d, err := p9.New(p9.Config{Tag: "p9", Root: p9Dir})
			if err != nil {
				return nil, nil, err
			}
			return d, func() uint64 { return d.Metrics().Requests.Load() }, nil
		}},
	}
	if only != "" {
		devices = slices.DeleteFunc(devices, func(d device) bool { return d.name != only })
		if len(devices) == 0 {
			return fmt.Errorf("-only %q: want virtiofs or 9p", only)
		}
	}
	values := map[string]string{}
	requests := map[string]uint64{}
	retries := 0
	for _, dev := range devices {
		if err := guestproto.WriteTree(filepath.Join(dev.dir, "tree"), files); err != nil {
			return err
		}
		for try := 1; ; try++ {
			from := slices.IndexFunc(phases, func(ph string) bool { return values[phaseKey(dev.name, ph)] == "" })
			if from < 0 {
				break
			}
			n, err := boot(kernel, initrd, dev, w, memMiB, phases[from], timeout, values)
			requests[dev.name] += n
			if err == nil {
				continue // the loop's check says whether every phase has a time
			}
			if try == tries {
				return fmt.Errorf("%s (boot %d of %d): %w", dev.name, try, tries, err)
			}
			retries++
			fmt.Printf("sharebench: %s: boot from phase %s lost (%v); booting again\n", dev.name, phases[from], err)
		}
	}

	for _, dev := range devices {
		if got := values["share_"+dev.name+"_files"]; got != strconv.Itoa(files) {
			return fmt.Errorf("%s: guest walked %s files, want %d", dev.name, got, files)
		}
		if got := values["share_"+dev.name+"_bytes"]; got != strconv.Itoa(mib<<20) {
			return fmt.Errorf("%s: guest read %s bytes, want %d", dev.name, got, mib<<20)
		}
		n, err := countFiles(filepath.Join(dev.dir, "tree"))
		if err != nil {
			return fmt.Errorf("%s: host: %w", dev.name, err)
		}
		fi, err := os.Stat(filepath.Join(dev.dir, "big"))
		if err != nil {
			return fmt.Errorf("%s: host: %w", dev.name, err)
		}
		created, err := countFiles(filepath.Join(dev.dir, "new"))
		if err != nil {
			return fmt.Errorf("%s: host: %w", dev.name, err)
		}
		if n != files || created != w.creates || fi.Size() != int64(mib)<<20 {
			return fmt.Errorf("%s: host sees %d and %d files and %d bytes, want %d, %d and %d",
				dev.name, n, created, fi.Size(), files, w.creates, mib<<20)
		}
	}
	fmt.Printf("metrics: virtio-fs requests %d; virtio-9p requests %d; boots lost and run again: %d\n",
		requests["virtiofs"], requests["9p"], retries)
	ns := func(key string) time.Duration {
		v, _ := strconv.ParseInt(values[key], 10, 64)
		return time.Duration(v)
	}
	if only != "" {
		for _, ph := range phases {
			fmt.Printf("bench share-%s: %s %v\n", ph, only, ns(phaseKey(only, ph)).Round(time.Millisecond))
		}
		return nil
	}
	for _, ph := range phases {
		a, b := ns(phaseKey("virtiofs", ph)), ns(phaseKey("9p", ph))
		if a <= 0 || b <= 0 {
			return fmt.Errorf("phase %s: no time reported", ph)
		}
		name := fmt.Sprintf("share-%s-%dfiles", ph, files)
		if ph == "create" {
			name = fmt.Sprintf("share-%s-%dfiles", ph, w.creates)
		}
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

func phaseKey(dev, phase string) string { return "share_" + dev + "_" + phase + "_ns" }

// boot runs dev's workload from phase from in a machine of its own and
// adds what the guest reported to values. It returns the device's request
// count and why the boot did not finish its workload, if it did not.
func boot(kernel, initrd string, dev device, w workload, memMiB int, from string, timeout time.Duration, values map[string]string) (uint64, error) {
	d, requests, err := dev.new()
	if err != nil {
		return 0, err
	}
	defer d.Close()
	g := &guest{values: map[string]string{}}
	m, err := vmm.New(vmm.Config{
		Kernel: kernel, Initrd: initrd, MemoryMiB: memMiB,
		Cmdline: fmt.Sprintf("msb_end=reboot msb_checks=share msb_share_creates=%d msb_share_mib=%d msb_share_devices=%s msb_share_from=%s",
			w.creates, w.mib, dev.name, from),
		Console: g, Devices: []virtio.Device{d},
	})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stopWatch := g.watch(*stallAfter, m)
	start := time.Now()
	exit, err := m.Run(ctx)
	stopWatch()
	g.flush()
	fmt.Printf("vm: %s from %s: %v after %v\n", dev.name, from, exit, time.Since(start).Round(time.Millisecond))
	for k, v := range g.values {
		if strings.HasPrefix(k, "share_"+dev.name+"_") {
			values[k] = v
		}
	}
	switch {
	case err != nil:
		return requests(), err
	case g.get("share_error") != "":
		return requests(), fmt.Errorf("guest: share_error=%s", g.get("share_error"))
	case g.get("done") != "1":
		return requests(), fmt.Errorf("guest did not finish (%v, no done line); console tail:\n%s", exit, g.tailText())
	}
	return requests(), nil
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

// watch prints the vCPUs' states and every goroutine's stack, and stops
// the machine, once the console has been silent for d, until the returned
// stop is called.
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
				m.Stop() // the boot is lost; the caller boots again
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

var _ io.Writer = (*guest)(nil)
