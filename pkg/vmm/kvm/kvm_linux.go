// SPDX-License-Identifier: Apache-2.0

package kvm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DevicePath is where the KVM device node lives.
const DevicePath = "/dev/kvm"

// ErrUnavailable is returned by Open when /dev/kvm is missing or cannot be
// opened; the wrapped error says which.
var ErrUnavailable = errors.New("kvm: /dev/kvm unavailable")

// System is an open /dev/kvm handle.
type System struct {
	fd int
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) {
	fd, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("%w: no such device; load the kvm module or enable virtualization", ErrUnavailable)
		case errors.Is(err, unix.EACCES):
			return nil, fmt.Errorf("%w: permission denied; add the user to the kvm group", ErrUnavailable)
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s := &System{fd: fd}
	v, err := ioctl(fd, ioctlGetAPIVersion, 0)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("kvm: get api version: %w", err)
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("kvm: api version %d, want %d", v, APIVersion)
	}
	return s, nil
}

// Close closes the handle. VMs created from it stay valid.
func (s *System) Close() error { return closeFD(&s.fd) }

// CheckExtension reports the value KVM_CHECK_EXTENSION gives for c (0: absent).
func (s *System) CheckExtension(c Cap) (int, error) {
	v, err := ioctl(s.fd, ioctlCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("kvm: check extension %d: %w", c, err)
	}
	return v, nil
}

// CreateVM creates a VM with no memory and no vCPUs.
func (s *System) CreateVM() (*VM, error) {
	mmapSize, err := ioctl(s.fd, ioctlGetVCPUMmapSize, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: get vcpu mmap size: %w", err)
	}
	fd, err := ioctl(s.fd, ioctlCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: create vm: %w", err)
	}
	return &VM{fd: fd, runSize: mmapSize}, nil
}

// VM is a KVM virtual machine.
type VM struct {
	fd      int
	runSize int
}

// Close releases the VM. Its vCPUs must be closed first.
func (vm *VM) Close() error { return closeFD(&vm.fd) }

// SetUserMemoryRegion installs or replaces a guest memory slot.
func (vm *VM) SetUserMemoryRegion(r UserMemoryRegion) error {
	if err := ioctlPtr(vm.fd, ioctlSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("kvm: set memory slot %d at %#x (%d bytes): %w", r.Slot, r.GuestPhysAddr, r.MemorySize, err)
	}
	return nil
}

// SetTSSAddr places the three pages Intel VMX needs for real-mode emulation.
func (vm *VM) SetTSSAddr(addr uint32) error {
	if _, err := ioctl(vm.fd, ioctlSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("kvm: set tss addr %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and local APICs.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctl(vm.fd, ioctlCreateIRQChip, 0); err != nil {
		return fmt.Errorf("kvm: create irqchip: %w", err)
	}
	return nil
}

// CreateVCPU creates vCPU id and maps its kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd, ioctlCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, err)
	}
	run, err := unix.Mmap(fd, 0, vm.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kvm: map kvm_run of vcpu %d: %w", id, err)
	}
	return &VCPU{ID: id, fd: fd, run: RunData{b: run}}, nil
}

// VCPU is one virtual CPU. Run must be called from one OS thread for the
// vCPU's whole life (the caller locks its goroutine to the thread).
type VCPU struct {
	ID  int
	fd  int
	run RunData
}

// Close unmaps kvm_run and closes the vCPU.
func (c *VCPU) Close() error {
	var err error
	if c.run.b != nil {
		err = unix.Munmap(c.run.b)
		c.run.b = nil
	}
	return errors.Join(err, closeFD(&c.fd))
}

// Run enters the guest until the next exit and returns the exit data. EINTR
// (a signal kicked the thread out) and EAGAIN (an application processor
// left its wait-for-SIPI state; KVM asks to be called again) are returned
// as is for the caller to check.
func (c *VCPU) Run() (*RunData, error) {
	if _, err := ioctl(c.fd, ioctlRun, 0); err != nil {
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			return &c.run, err
		}
		return nil, fmt.Errorf("kvm: run vcpu %d: %w", c.ID, err)
	}
	return &c.run, nil
}

// Regs reads the general purpose registers.
func (c *VCPU) Regs() (Regs, error) {
	var r Regs
	if err := ioctlPtr(c.fd, ioctlGetRegs, &r); err != nil {
		return r, fmt.Errorf("kvm: get regs of vcpu %d: %w", c.ID, err)
	}
	return r, nil
}

// SetRegs writes the general purpose registers.
func (c *VCPU) SetRegs(r Regs) error {
	if err := ioctlPtr(c.fd, ioctlSetRegs, &r); err != nil {
		return fmt.Errorf("kvm: set regs of vcpu %d: %w", c.ID, err)
	}
	return nil
}

// Sregs reads the special registers.
func (c *VCPU) Sregs() (Sregs, error) {
	var r Sregs
	if err := ioctlPtr(c.fd, ioctlGetSregs, &r); err != nil {
		return r, fmt.Errorf("kvm: get sregs of vcpu %d: %w", c.ID, err)
	}
	return r, nil
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(r Sregs) error {
	if err := ioctlPtr(c.fd, ioctlSetSregs, &r); err != nil {
		return fmt.Errorf("kvm: set sregs of vcpu %d: %w", c.ID, err)
	}
	return nil
}

// ioctl issues a request with a scalar argument. EINTR (the Go runtime's
// preemption signal can land during a slow request such as KVM_CREATE_VM)
// is retried, except for KVM_RUN, where it means "kicked".
func ioctl(fd int, req, arg uintptr) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == unix.EINTR && req != ioctlRun {
			continue
		}
		if errno != 0 {
			return 0, os.NewSyscallError("ioctl", errno)
		}
		return int(r), nil
	}
}

func closeFD(fd *int) error {
	if *fd < 0 {
		return nil
	}
	err := unix.Close(*fd)
	*fd = -1
	return err
}

// RunData returns the vCPU's kvm_run page. Its SetImmediateExit may be
// called from another goroutine to stop the vCPU; its other methods belong
// to the thread that runs the vCPU.
func (c *VCPU) RunData() *RunData { return &c.run }
