// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/fs/fuse"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/rng"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
)

// HiddenCommand is the first argument of the msb binary in its sandbox
// process mode: "msb __sandbox DIR".
const HiddenCommand = "__sandbox"

// guestCID is the guest's vsock context ID; each VM has its own device,
// so every guest can use the first unreserved one.
const guestCID = 3

// Descriptors the sandbox process inherits: specFD is the read end of a
// pipe carrying its vmSpec (JSON, then end of file); an attached sandbox
// process gets the read end of its owner's watchdog pipe on watchdogFD.
const (
	specFD     = 3
	watchdogFD = 4
)

// maxSpecBytes bounds the configuration read from specFD.
const maxSpecBytes = 4 << 20

// Watchdog pipe protocol: the owner writes detachByte to let the sandbox
// outlive it; end of file without it means the owner closed its handle or
// died, and the sandbox stops.
const detachByte = 'D'

// hardStopGrace is how long a hard stop (SIGINT: the VM ends at once,
// without a guest shutdown) may take before the sandbox process exits on its
// own and callers escalate to SIGKILL. The VM is torn down in order rather
// than by SIGKILL because killing a process whose vCPUs are inside
// KVM_RUN has crashed the nested L1 kernel of the test harness.
const hardStopGrace = 2 * time.Second

// statsInterval is how often the sandbox process writes stats.json.
const statsInterval = time.Second

// vmSpec is what the sandbox process needs to run the VM (vm.json).
type vmSpec struct {
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
	Rootfs string `json:"rootfs"`
	// Upper is the managed root disk (ext4 image, attached writable after
	// the root); "" for a tmpfs upper.
	Upper string `json:"upper,omitempty"`
	// Cmdline is appended to the guest kernel's command line.
	Cmdline string `json:"cmdline,omitempty"`
	// Disks are extra block devices (disk mounts), after Rootfs and
	// Upper.
	Disks []disk `json:"disks,omitempty"`
	// Shares are the virtio-fs devices (bind mounts and named volumes).
	Shares []share `json:"shares,omitempty"`
	// RestartInitrd, if set, replaces Initrd on later boots.
	RestartInitrd string   `json:"restart_initrd,omitempty"`
	MemoryMiB     int      `json:"memory_mib"`
	CPUs          int      `json:"cpus"`
	Network       *Network `json:"network,omitempty"`
	// Watchdog: the process inherited the owner's watchdog pipe.
	Watchdog bool `json:"watchdog,omitempty"`
	// StopGrace is how long a requested stop waits for the guest to power
	// off before the VM is ended.
	StopGrace time.Duration `json:"stop_grace,omitempty"`
	// MaxDuration, if positive, stops the sandbox that long after it
	// became ready.
	MaxDuration time.Duration `json:"max_duration,omitempty"`
	// IdleTimeout, if positive, stops the sandbox after that long without
	// activity (the activity file's modification time).
	IdleTimeout time.Duration `json:"idle_timeout,omitempty"`
}

// Stats is what the sandbox process reports about its VM (stats.json),
// rewritten every statsInterval while the VM runs.
type Stats struct {
	Time time.Time `json:"time"`
	// Booted is when the VM started.
	Booted time.Time `json:"booted"`
	// VCPUTime is the CPU time the vCPU threads used.
	VCPUTime time.Duration `json:"vcpu_time_ns"`
	// CPUPercent is the vCPU threads' use over the last interval, in
	// percent of all host CPUs.
	CPUPercent float64 `json:"cpu_percent"`
	// DiskReadBytes and DiskWriteBytes count every block device.
	DiskReadBytes  uint64 `json:"disk_read_bytes"`
	DiskWriteBytes uint64 `json:"disk_write_bytes"`
	// NetRxBytes (to the guest) and NetTxBytes (from the guest) count
	// Ethernet frames on the NIC.
	NetRxBytes uint64 `json:"net_rx_bytes"`
	NetTxBytes uint64 `json:"net_tx_bytes"`
}

// RunProcess is the sandbox process: it boots the VM described in dir,
// serves the agent socket, and returns when the VM ended, after recording
// the outcome in the sandbox's state. SIGTERM, SIGHUP, the end of the
// owner's watchdog pipe and MaxDuration stop the guest gracefully (agent
// shutdown, then the VM is ended after the grace period); SIGINT (the hard
// stop) or ctx end the VM at once; SIGUSR1 drains it (no new processes,
// power-off once the running ones ended); SIGUSR2 writes a diagnosis to
// the runtime log (see diagnose). Every goroutine it starts is joined before it
// returns.
func RunProcess(ctx context.Context, dir string) (err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	specPipe := os.NewFile(specFD, "spec")
	if specPipe == nil {
		return fmt.Errorf("sandbox process: no configuration pipe on fd %d (it is started by pkg/sandbox)", specFD)
	}
	b, err := io.ReadAll(io.LimitReader(specPipe, maxSpecBytes+1))
	specPipe.Close()
	if err != nil {
		return fmt.Errorf("sandbox process: read the configuration: %w", err)
	}
	if len(b) > maxSpecBytes {
		return fmt.Errorf("sandbox process: configuration over %d bytes", maxSpecBytes)
	}
	var spec vmSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("sandbox process: configuration: %w", err)
	}
	exit, err := runVM(ctx, dir, &spec)
	fmt.Fprintf(os.Stderr, "sandbox process: machine ended: %v (err %v)\n", exit, err)
	status, what := StatusStopped, exit.String()
	switch {
	case err != nil:
		status, what = StatusCrashed, err.Error()
	case exit.Reason != vmm.ExitPowerOff && exit.Reason != vmm.ExitStopped &&
		exit.Reason != vmm.ExitReset && exit.Reason != vmm.ExitShutdown:
		status = StatusCrashed
	}
	if _, serr := updateState(dir, func(s *State) {
		s.Status, s.Exit, s.GuestStatus = status, what, nil
		if err == nil && exit.Reason == vmm.ExitPowerOff {
			gs := exit.Status
			s.GuestStatus = &gs
		}
	}); serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}

func runVM(ctx context.Context, dir string, spec *vmSpec) (vmm.Exit, error) {
	console, err := os.OpenFile(filepath.Join(dir, consoleFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return vmm.Exit{}, fmt.Errorf("sandbox process: console: %w", err)
	}
	defer console.Close()
	root, err := blk.New(blk.Config{Path: spec.Rootfs, ReadOnly: true, ID: "root"})
	if err != nil {
		return vmm.Exit{}, fmt.Errorf("sandbox process: %w", err)
	}
	defer root.Close()
	vs, err := vsock.New(vsock.Config{GuestCID: guestCID})
	if err != nil {
		return vmm.Exit{}, fmt.Errorf("sandbox process: %w", err)
	}
	defer vs.Close()
	devices := []virtio.Device{root}
	disks := []*blk.Device{root}
	if spec.Upper != "" {
		// Second, so that the guest names it /dev/vdb.
		upper, err := blk.New(blk.Config{Path: spec.Upper, ID: "upper"})
		if err != nil {
			return vmm.Exit{}, fmt.Errorf("sandbox process: %w", err)
		}
		defer upper.Close()
		devices = append(devices, upper)
		disks = append(disks, upper)
	}
	for i, d := range spec.Disks {
		dev, err := openDisk(d, fmt.Sprintf("disk%d", i))
		if err != nil {
			return vmm.Exit{}, fmt.Errorf("sandbox process: disk %s: %w", d.Path, err)
		}
		defer dev.Close()
		devices = append(devices, dev)
		disks = append(disks, dev)
	}
	devices = append(devices, vs, rng.New())
	maxNodes, maxHandles := shareTables(len(spec.Shares))
	for _, sh := range spec.Shares {
		dev, err := fs.New(fs.Config{Tag: sh.Tag, Share: fuse.Config{
			Root: sh.Root, ReadOnly: sh.ReadOnly, QuotaBytes: sh.QuotaBytes,
			MaxNodes: maxNodes, MaxHandles: maxHandles,
			// Files the guest creates get the guest's owners where the
			// host can give them (the sandbox process runs as root).
			GuestOwnership: os.Geteuid() == 0,
		}})
		if err != nil {
			return vmm.Exit{}, fmt.Errorf("sandbox process: share %s: %w", sh.Root, err)
		}
		defer dev.Close()
		devices = append(devices, dev)
	}
	var net *nic
	if spec.Network.enabled() {
		if net, err = newNIC(spec.Network); err != nil {
			return vmm.Exit{}, fmt.Errorf("sandbox process: %w", err)
		}
		defer net.Close()
		devices = append(devices, net.dev)
	}
	sock := SocketPath(dir)
	os.Remove(sock) // a stale socket of an earlier run
	proxy, err := vsock.NewUnixProxy(vs, vsock.UnixConfig{Path: sock})
	if err != nil {
		return vmm.Exit{}, fmt.Errorf("sandbox process: %w", err)
	}
	m, err := vmm.New(vmm.Config{
		Kernel:    spec.Kernel,
		Initrd:    spec.Initrd,
		Console:   console,
		MemoryMiB: spec.MemoryMiB,
		VCPUs:     spec.CPUs,
		Devices:   devices,
		Cmdline:   spec.Cmdline,
	})
	if err != nil {
		return vmm.Exit{}, fmt.Errorf("sandbox process: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, diagnoseSignal)
	defer signal.Stop(sigs)

	// stopReq asks for a graceful stop; the stopper goroutine serves it.
	stopReq := make(chan struct{}, 1)
	requestStop := func() {
		select {
		case stopReq <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	var drainOnce sync.Once
	var proxyErr error
	wg.Go(func() { proxyErr = proxy.Run(ctx) })
	wg.Go(func() {
		// Both limits count from readiness (the creator writes the ready
		// file when the agent answered), not from the VM's start: a slow
		// boot must not eat the sandbox's time.
		var check <-chan time.Time
		if spec.MaxDuration > 0 || spec.IdleTimeout > 0 {
			t := time.NewTicker(limitCheck(spec))
			defer t.Stop()
			check = t.C
		}
		for {
			select {
			case <-check:
				ready, err := os.Stat(filepath.Join(dir, readyFile))
				if err != nil {
					continue // still booting
				}
				if spec.MaxDuration > 0 && time.Since(ready.ModTime()) >= spec.MaxDuration {
					fmt.Fprintf(os.Stderr, "sandbox process: max duration %v reached\n", spec.MaxDuration)
					requestStop()
					check = nil
					continue
				}
				if spec.IdleTimeout > 0 {
					last := ready.ModTime()
					if fi, err := os.Stat(filepath.Join(dir, activityFile)); err == nil && fi.ModTime().After(last) {
						last = fi.ModTime()
					}
					if time.Since(last) >= spec.IdleTimeout {
						fmt.Fprintf(os.Stderr, "sandbox process: idle for %v; stopping\n", spec.IdleTimeout)
						requestStop()
						check = nil
					}
				}
			case s := <-sigs:
				if s == syscall.SIGUSR1 {
					drainOnce.Do(func() { wg.Go(func() { drain(ctx, dir, vs) }) })
					continue
				}
				if s == diagnoseSignal {
					diagnose(ctx, os.Stderr, m)
					continue
				}
				if s == syscall.SIGINT {
					// The hard stop (Kill): end the VM now, and the
					// process too should the teardown hang.
					m.Stop()
					time.AfterFunc(hardStopGrace, func() {
						fmt.Fprintf(os.Stderr, "sandbox process: VM not torn down %v after a hard stop; exiting\n", hardStopGrace)
						os.Exit(137)
					})
					continue
				}
				requestStop()
			case <-ctx.Done():
				return
			}
		}
	})
	wg.Go(func() {
		select {
		case <-stopReq:
			gracefulStop(ctx, vs, m, spec.StopGrace)
		case <-ctx.Done():
		}
	})
	if spec.Watchdog {
		// Non-blocking, the pipe goes through the poller, so that closing
		// it after the VM ended unblocks the reader.
		if err := syscall.SetNonblock(watchdogFD, true); err != nil {
			return vmm.Exit{}, fmt.Errorf("sandbox process: watchdog pipe: %w", err)
		}
		wd := os.NewFile(watchdogFD, "watchdog")
		defer wd.Close()
		wg.Go(func() {
			if !watchOwner(wd) && ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "sandbox process: owner released the sandbox; stopping")
				requestStop()
			}
		})
		stopWatch := context.AfterFunc(ctx, func() { wd.Close() })
		defer stopWatch()
	}
	booted := time.Now().UTC()
	wg.Go(func() { writeStats(ctx, dir, booted, m, disks, net) })

	exit, runErr := m.Run(ctx)
	cancel()
	wg.Wait()
	if runErr == nil && proxyErr != nil {
		// The VM ran but nobody could reach it: report it with the exit.
		fmt.Fprintf(os.Stderr, "sandbox process: %v\n", proxyErr)
	}
	return exit, runErr
}

// limitCheck is how often the sandbox process checks MaxDuration and
// IdleTimeout: a tenth of the shorter, between 100 ms and a second.
func limitCheck(spec *vmSpec) time.Duration {
	d := time.Second
	for _, l := range []time.Duration{spec.MaxDuration, spec.IdleTimeout} {
		if l > 0 {
			d = min(d, l/10)
		}
	}
	return max(d, 100*time.Millisecond)
}

// watchOwner reads the watchdog pipe until it ends. It returns true when
// the owner detached (the sandbox keeps running), false when the owner
// went away.
func watchOwner(r io.Reader) bool {
	buf := make([]byte, 16)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c == detachByte {
				return true
			}
		}
		if err != nil {
			return false
		}
	}
}

// gracefulStop asks the guest agent to power off and ends the VM when it
// has not done so within grace (zero: DefaultStopTimeout). ctx ends when the
// VM ended.
func gracefulStop(ctx context.Context, vs *vsock.Device, m *vmm.Machine, grace time.Duration) {
	if grace <= 0 {
		grace = DefaultStopTimeout
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	dctx, cancel := context.WithTimeout(ctx, grace)
	err := withAgent(dctx, vs, func(c *host.Client) error { return c.Shutdown(dctx, false) })
	cancel()
	if err != nil {
		// No agent to ask (still booting, or dead): end the VM now.
		fmt.Fprintf(os.Stderr, "sandbox process: graceful stop: %v; stopping the VM\n", err)
		m.Stop()
		return
	}
	select {
	case <-deadline.C:
		fmt.Fprintf(os.Stderr, "sandbox process: guest did not power off within %v; stopping the VM\n", grace)
		m.Stop()
	case <-ctx.Done():
	}
}

// withAgent connects to the guest agent over the VM's own vsock device
// (the sandbox process needs no socket), runs fn and closes the
// connection. ctx bounds the connection and the handshake.
func withAgent(ctx context.Context, vs *vsock.Device, fn func(*host.Client) error) error {
	conn, err := vs.Dial(ctx, bootcfg.AgentPort)
	if err != nil {
		return err
	}
	c, err := host.Dial(ctx, conn, host.Config{Agent: "msb-sandbox-process"})
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	return fn(c)
}

// drain marks the sandbox draining and asks the guest agent to start no more
// processes and to power off once the running ones ended. ctx ends when
// the VM ended.
func drain(ctx context.Context, dir string, vs *vsock.Device) {
	updateState(dir, func(s *State) {
		if s.Status == StatusRunning {
			s.Status = StatusDraining
		}
	})
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := withAgent(dctx, vs, func(c *host.Client) error { return c.Drain(dctx) })
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "sandbox process: drain: %v\n", err)
	}
}

// writeStats rewrites stats.json every statsInterval until ctx ends.
func writeStats(ctx context.Context, dir string, booted time.Time, m *vmm.Machine, disks []*blk.Device, net *nic) {
	t := time.NewTicker(statsInterval)
	defer t.Stop()
	path := filepath.Join(dir, statsFile)
	var last Stats
	ncpu := float64(runtime.NumCPU())
	for {
		s := Stats{Time: time.Now().UTC(), Booted: booted, VCPUTime: m.VCPUTime()}
		for _, d := range disks {
			bm := d.Metrics()
			s.DiskReadBytes += bm.ReadBytes.Load()
			s.DiskWriteBytes += bm.WriteBytes.Load()
		}
		if net != nil {
			st := net.stack.Stats()
			s.NetRxBytes, s.NetTxBytes = st.BytesToGuest, st.BytesFromGuest
		}
		if !last.Time.IsZero() {
			if wall := s.Time.Sub(last.Time); wall > 0 {
				s.CPUPercent = 100 * float64(s.VCPUTime-last.VCPUTime) / float64(wall) / ncpu
			}
		}
		last = s
		if b, err := json.Marshal(&s); err == nil {
			writeFileAtomic(path, b)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReadStats reads the last stats the sandbox process in dir wrote.
func ReadStats(dir string) (*Stats, error) {
	b, err := os.ReadFile(filepath.Join(dir, statsFile))
	if err != nil {
		return nil, fmt.Errorf("sandbox: stats: %w", err)
	}
	var s Stats
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("sandbox: stats: %w", err)
	}
	return &s, nil
}
