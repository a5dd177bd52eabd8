// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/rng"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
)

// HiddenCommand is the first argument of the msb binary in its sandbox
// process mode: "msb __sandbox DIR".
const HiddenCommand = "__sandbox"

// guestCID is the guest's vsock context ID; each VM has its own device,
// so every guest can use the first unreserved one.
const guestCID = 3

// vmSpec is what the sandbox process needs to run the VM (vm.json).
type vmSpec struct {
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd"`
	Rootfs    string `json:"rootfs"`
	MemoryMiB int    `json:"memory_mib"`
	CPUs      int    `json:"cpus"`
}

// RunProcess is the sandbox process: it boots the VM described in dir,
// serves the agent socket, and returns when the VM ended, after recording
// the outcome in the sandbox's state. SIGTERM, SIGINT and SIGHUP (and ctx)
// stop the VM. It owns three goroutines (the VM, the Unix proxy, the
// signal watcher) and joins them before it returns.
func RunProcess(ctx context.Context, dir string) (err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, vmFile))
	if err != nil {
		return fmt.Errorf("sandbox process: %w", err)
	}
	var spec vmSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("sandbox process: %s: %w", vmFile, err)
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
		s.Status, s.Exit = status, what
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
		Devices:   []virtio.Device{root, vs, rng.New()},
	})
	if err != nil {
		return vmm.Exit{}, fmt.Errorf("sandbox process: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	var wg sync.WaitGroup
	var proxyErr error
	wg.Go(func() { proxyErr = proxy.Run(ctx) })
	wg.Go(func() {
		select {
		case <-sigs:
			m.Stop()
		case <-ctx.Done():
		}
	})
	exit, runErr := m.Run(ctx)
	cancel()
	wg.Wait()
	if runErr == nil && proxyErr != nil {
		// The VM ran but nobody could reach it: report it with the exit.
		fmt.Fprintf(os.Stderr, "sandbox process: %v\n", proxyErr)
	}
	return exit, runErr
}
