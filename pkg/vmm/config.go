// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"errors"
	"fmt"
	"io"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/arch/amd64"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// Config describes a machine.
type Config struct {
	// Kernel is the path of an uncompressed vmlinux ELF. Required.
	Kernel string
	// Initrd is the path of an initramfs; empty means none.
	Initrd string
	// Cmdline is appended to the arguments the machine sets itself (the
	// console, reboot=k, and one virtio_mmio.device= per device).
	Cmdline string
	// MemoryMiB is the guest RAM in MiB; zero means DefaultMemoryMiB.
	MemoryMiB int
	// VCPUs is the number of vCPUs; zero means 1.
	VCPUs int
	// Console receives what the guest writes to COM1; nil discards it.
	// Writes come from vCPU goroutines and should not block for long.
	Console io.Writer
	// Devices are the virtio devices, in MMIO slot order (slot i at
	// amd64.VirtioMMIOSlot(i)). The caller keeps ownership: the machine
	// resets them when it ends but does not close them.
	Devices []virtio.Device
}

// DefaultMemoryMiB is the guest RAM when Config.MemoryMiB is zero.
const DefaultMemoryMiB = 128

// baseCmdline is what every guest gets: the console on COM1 and no other
// UART probed; quiet (warnings and worse only: every console byte is a VM
// exit); reboot through the i8042 reset line, which ends the machine; a
// panic resets at once; no probing of PS/2 devices that are not there; the
// timer check that fails under nested emulation off.
const baseCmdline = "console=ttyS0 8250.nr_uarts=1 quiet reboot=k panic=-1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd no_timer_check"

func (c *Config) withDefaults() Config {
	d := *c
	if d.MemoryMiB == 0 {
		d.MemoryMiB = DefaultMemoryMiB
	}
	if d.VCPUs == 0 {
		d.VCPUs = 1
	}
	return d
}

// validate reports every problem of the configuration together.
func (c *Config) validate() error {
	var errs []error
	if c.Kernel == "" {
		errs = append(errs, errors.New("no kernel"))
	}
	if c.MemoryMiB < 0 {
		errs = append(errs, fmt.Errorf("memory %d MiB is negative", c.MemoryMiB))
	} else if err := amd64.ValidateRAM(uint64(c.MemoryMiB) << 20); err != nil {
		errs = append(errs, err)
	}
	if c.VCPUs < 1 || c.VCPUs > amd64.MaxVCPUs {
		errs = append(errs, fmt.Errorf("%d vcpus: want 1 to %d", c.VCPUs, amd64.MaxVCPUs))
	}
	if len(c.Devices) > amd64.VirtioMaxDevices {
		errs = append(errs, fmt.Errorf("%d virtio devices: at most %d", len(c.Devices), amd64.VirtioMaxDevices))
	}
	for i, d := range c.Devices {
		if d == nil {
			errs = append(errs, fmt.Errorf("virtio device %d is nil", i))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("vmm: invalid config: %w", errors.Join(errs...))
	}
	return nil
}
