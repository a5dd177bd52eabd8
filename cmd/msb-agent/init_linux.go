// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/internal/portio"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/legacy/poweroff"
)

// action is how the machine ends.
type action int

const (
	actPowerOff action = iota + 1
	actReboot
)

// signalAction maps a signal to PID 1 onto what it asks for: busybox halt
// and poweroff send SIGUSR1 and SIGUSR2, kill and most runtimes SIGTERM,
// the kernel SIGINT for ctrl-alt-del (after CAD_OFF). Busybox reboot sends
// SIGTERM, so it powers off; a microVM's reboot would end it anyway.
func signalAction(sig os.Signal) (action, bool) {
	switch sig {
	case unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPWR:
		return actPowerOff, true
	case unix.SIGINT:
		return actReboot, true
	}
	return 0, false
}

// initProc is the state of PID 1. It is used by init's main goroutine only.
type initProc struct {
	cfg    *bootcfg.Config
	mounts mounts
	// server is the pid of the protocol server, 0 while none runs.
	server int
	// restarts limits how often the server is restarted.
	restarts restartPolicy
	// switched is set once init runs in the assembled root.
	switched bool
	// upper is the disk-backed writable layer's mount (an O_PATH
	// descriptor taken before the switch hid it), remounted read-only at
	// the end so that its file system is left clean; nil for a tmpfs.
	upper *os.File
}

// runInit is PID 1's main: boot, then supervise and reap until asked to
// stop. It never returns.
func runInit() {
	in := &initProc{restarts: restartPolicy{max: 5, window: time.Minute}}
	defer func() {
		if r := recover(); r != nil {
			errorf("panic: %v\n%s", r, debug.Stack())
			in.end(actPowerOff, bootcfg.StatusInternal)
		}
	}()
	unix.Umask(0o022)
	os.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	if err := in.mounts.run(earlyPlan()); err != nil {
		in.fail(bootcfg.StatusRootFailed, fmt.Errorf("early mounts: %w", err))
	}
	ensureConsole()
	logf("started (uptime %s)", uptime())

	raw, err := os.ReadFile(bootcfg.Path)
	if err != nil {
		in.fail(bootcfg.StatusBadConfig, fmt.Errorf("boot configuration: %w", err))
	}
	cfg, err := bootcfg.Parse(raw)
	if err != nil {
		in.fail(bootcfg.StatusBadConfig, fmt.Errorf("boot configuration %s: %w", bootcfg.Path, err))
	}
	in.cfg = cfg

	if err := in.mounts.run(rootPlan(cfg)); err != nil {
		in.fail(bootcfg.StatusRootFailed, fmt.Errorf("root: %w", err))
	}
	if cfg.Root.Upper.Device != "" {
		// Close-on-exec: only init holds it.
		if in.upper, err = os.OpenFile(rwDir, unix.O_PATH|unix.O_DIRECTORY, 0); err != nil {
			errorf("open %s: %v (its file system will not be left clean)", rwDir, err)
		}
	}
	payloads, err := openPatchDir(cfg)
	if err != nil {
		in.fail(bootcfg.StatusPatchFailed, err)
	}
	// Free the initramfs copies nothing needs any more: the agent runs
	// on (and re-executes itself) through /proc/self/exe, and the
	// configuration was read.
	for _, p := range []string{"/init", bootcfg.Path} {
		if err := os.Remove(p); err != nil {
			errorf("remove %s from the initramfs: %v", p, err)
		}
	}
	if err := switchRoot(newRoot); err != nil {
		in.fail(bootcfg.StatusRootFailed, fmt.Errorf("root: %w", err))
	}
	in.mounts.rebase(newRoot)
	in.switched = true
	// Patches go into the root's writable layer before the configured
	// mounts (they patch the image, not volumes) and before the server
	// runs anything.
	if err := applyPatches("/", cfg.Patches, payloads); err != nil {
		in.fail(bootcfg.StatusPatchFailed, err)
	}
	if payloads != nil {
		payloads.Close()
	}
	cfg.Patches = nil // the server has no use for them
	if err := setupGuest(cfg, &in.mounts); err != nil {
		in.fail(bootcfg.StatusSetupFailed, err)
	}
	// Ctrl-alt-del becomes SIGINT to init instead of an immediate reboot
	// (reboot(2), LINUX_REBOOT_CMD_CAD_OFF).
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		errorf("ctrl-alt-del off: %v", err)
	}
	in.loop()
}

// loop starts the server and handles signals until a shutdown.
func (in *initProc) loop() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPWR)
	restart := time.NewTimer(0) // start the server at once
	for {
		select {
		case sig := <-sigs:
			if sig == unix.SIGCHLD {
				if in.reap() {
					delay, ok := in.restarts.next(time.Now())
					if !ok {
						in.fail(bootcfg.StatusAgentFailed, fmt.Errorf("server exited %d times within %v", in.restarts.max, in.restarts.window))
					}
					restart.Reset(delay)
				}
				continue
			}
			if act, ok := signalAction(sig); ok {
				logf("%v: shutting down", sig)
				in.end(act, bootcfg.StatusOK)
			}
		case <-restart.C:
			if err := in.startServer(); err != nil {
				errorf("start server: %v", err)
				delay, ok := in.restarts.next(time.Now())
				if !ok {
					in.fail(bootcfg.StatusAgentFailed, err)
				}
				restart.Reset(delay)
			}
		}
	}
}

// reap collects every exited child without blocking and reports whether
// the server was among them.
func (in *initProc) reap() (serverExited bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return serverExited
		}
		if pid == in.server && in.server != 0 {
			in.server = 0
			serverExited = true
			errorf("server (pid %d) ended: %s", pid, describeWait(ws))
		}
	}
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

// startServer starts the protocol server: this binary, re-executed from
// /proc/self/exe (which stays reachable after the switch), with the
// configuration on fd 3.
func (in *initProc) startServer() error {
	data, err := json.Marshal(in.cfg)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"msb-agent", serveArg}, &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=" + os.Getenv("PATH")},
		Files: []uintptr{0, 1, 2, r.Fd()},
	})
	if err != nil {
		w.Close()
		return err
	}
	in.server = pid
	// The pipe holds 64 KiB; a larger configuration is written while the
	// server reads it, and the server exiting early breaks the pipe.
	go func() {
		w.Write(data)
		w.Close()
	}()
	return nil
}

// fail reports err and ends the machine with status.
func (in *initProc) fail(status bootcfg.Status, err error) {
	errorf("%v", err)
	errorf("giving up: %v (power-off status %d)", status, uint8(status))
	in.end(actPowerOff, status)
}

// end stops every process, syncs, unmounts and ends the machine. It never
// returns.
//
//  1. SIGTERM to every process (kill(-1) spares PID 1), reaping until none
//     is left or the stop grace has passed;
//  2. SIGKILL to what is left, reaping for at most a second;
//  3. sync, unmount in reverse order, remount / and the root disk
//     read-only, sync;
//  4. power off through the VMM's port, or reboot.
func (in *initProc) end(act action, status bootcfg.Status) {
	signal.Reset()
	grace := time.Duration(bootcfg.DefaultStopGraceMS) * time.Millisecond
	if in.cfg != nil {
		grace = time.Duration(in.cfg.StopGraceMS) * time.Millisecond
	}
	in.server = 0
	if err := unix.Kill(-1, unix.SIGTERM); err != nil && err != unix.ESRCH {
		errorf("SIGTERM all: %v", err)
	}
	if !reapAll(grace) {
		logf("processes left after %v: SIGKILL", grace)
		unix.Kill(-1, unix.SIGKILL)
		if !reapAll(time.Second) {
			errorf("processes survive SIGKILL; going on")
		}
	}
	unix.Sync()
	in.mounts.unmountAll()
	if in.switched {
		// The root (the overlay) cannot be unmounted; read-only makes
		// it consistent. The hidden lower and upper stay mounted.
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			errorf("remount / read-only: %v", err)
		}
	}
	if in.upper != nil {
		// The disk under the overlay is hidden by the switch; its
		// descriptor still names the mount. Read-only marks its file
		// system clean (the ext4 superblock's state), as an unmount would.
		target := fmt.Sprintf("/proc/self/fd/%d", in.upper.Fd())
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			errorf("remount the root disk read-only: %v", err)
		}
	}
	unix.Sync()
	switch act {
	case actReboot:
		logf("rebooting")
		drainConsole()
		reboot()
	default:
		logf("power off (status %d)", uint8(status))
		drainConsole()
		powerOff(status)
	}
}

// drainConsole waits, at most a second, until the serial console has sent
// what was written to it: the tty layer transmits in the background, and
// ending the machine would cut the last lines (tcdrain(3), TCSBRK with a
// non-zero argument).
func drainConsole() {
	done := make(chan struct{})
	go func() {
		unix.IoctlSetInt(2, unix.TCSBRK, 1)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// reapAll reaps children until there are none (ECHILD), at most d. Every
// process descends from init, so no children left means no processes.
func reapAll(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case err == unix.ECHILD:
			return true
		case err == unix.EINTR || pid > 0:
			continue
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// powerOff writes status to the VMM's power-off switch, which ends the
// machine. Without the switch it falls back to a reboot, which a microVM
// treats as its end too.
func powerOff(status bootcfg.Status) {
	if err := portio.WriteByte(poweroff.Port, uint8(status)); err != nil {
		errorf("power-off port: %v", err)
	}
	time.Sleep(time.Second)
	errorf("still running after the power-off port; rebooting")
	reboot()
}

// reboot restarts the machine; with reboot=k (set by pkg/vmm) the kernel
// pulses the i8042 reset line and the VMM ends the machine.
func reboot() {
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		errorf("reboot: %v", err)
	}
	// PID 1 exiting panics the kernel: a last resort the VMM also reports.
	os.Exit(1)
}

// ensureConsole gives init the console as stdin, stdout and stderr when the
// kernel did not (an initramfs without /dev/console).
func ensureConsole() {
	var st unix.Stat_t
	if unix.Fstat(2, &st) == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	for i := range 3 {
		unix.Dup3(fd, i, 0)
	}
	if fd > 2 {
		unix.Close(fd)
	}
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0] + "s"
}

// restartPolicy allows max server restarts within window, with a growing
// delay between them (10 ms doubling, at most a second).
type restartPolicy struct {
	max    int
	window time.Duration
	times  []time.Time
}

// next records a restart at now and returns the delay before it, or false
// when the budget is spent.
func (p *restartPolicy) next(now time.Time) (time.Duration, bool) {
	kept := p.times[:0]
	for _, t := range p.times {
		if now.Sub(t) < p.window {
			kept = append(kept, t)
		}
	}
	p.times = kept
	if len(p.times) >= p.max {
		return 0, false
	}
	p.times = append(p.times, now)
	return min(10*time.Millisecond<<(len(p.times)-1), time.Second), true
}
