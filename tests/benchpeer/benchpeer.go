// SPDX-License-Identifier: Apache-2.0

package benchpeer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/microsandbox-go/microsandbox/internal/cpio"
)

// BaseCmdline is the guest command line both machines of a benchmark get,
// the same pkg/vmm sets up for its own guests.
const BaseCmdline = "console=ttyS0 8250.nr_uarts=1 quiet reboot=k panic=-1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd no_timer_check"

// QEMU describes a QEMU microvm peer.
type QEMU struct {
	// Sysroot holds qemu-system-x86_64 with its loader and libraries
	// (internal/vmtest/qemu-sysroot.sh): the L1 VM has no system libraries.
	Sysroot string
	// Kernel and Initrd boot the guest; MemoryMiB sizes it.
	Kernel, Initrd string
	MemoryMiB      int
	// Machine adds microvm machine options ("acpi=off").
	Machine string
	// Devices are extra QEMU arguments ("-netdev", ...).
	Devices []string
	// Args is appended to BaseCmdline.
	Args string
}

// Command returns a maker of commands that start the peer, after checking
// that the sysroot holds QEMU.
func (q QEMU) Command() (func() *exec.Cmd, error) {
	sysroot, _ := filepath.Abs(q.Sysroot)
	loader := filepath.Join(sysroot, "lib64/ld-linux-x86-64.so.2")
	bin := filepath.Join(sysroot, "usr/bin/qemu-system-x86_64")
	for _, p := range []string{loader, bin} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("qemu peer: %w (make bench collects it)", err)
		}
	}
	libs := strings.Join([]string{
		filepath.Join(sysroot, "lib/x86_64-linux-gnu"),
		filepath.Join(sysroot, "usr/lib/x86_64-linux-gnu"),
	}, ":")
	machine := "microvm,x-option-roms=off,rtc=off"
	if q.Machine != "" {
		machine += "," + q.Machine
	}
	return func() *exec.Cmd {
		// qboot, the minimal firmware that loads the kernel itself: QEMU
		// 10's default for microvm is SeaBIOS, which cannot boot -kernel
		// without the option ROMs x-option-roms=off leaves out.
		args := []string{"--library-path", libs, bin,
			"-L", filepath.Join(sysroot, "usr/share/qemu"),
			"-bios", "qboot.rom",
			"-M", machine,
			"-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", fmt.Sprint(q.MemoryMiB),
			"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
			"-serial", "stdio", "-monitor", "none"}
		args = append(args, q.Devices...)
		args = append(args, "-kernel", q.Kernel, "-initrd", q.Initrd, "-append", BaseCmdline+" "+q.Args)
		return exec.Command(loader, args...)
	}, nil
}

// WriteInitramfs writes an initramfs at path whose /init is the static
// binary init, with /dev/console.
func WriteInitramfs(path, init string) error {
	bin, err := os.ReadFile(init)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	a := cpio.NewWriter(f)
	if err := errors.Join(
		a.Dir("dev", 0o755),
		a.CharDevice("dev/console", 0o600, 5, 1),
		a.File("init", 0o755, bin),
		a.Close(),
	); err != nil {
		return err
	}
	return f.Close()
}
