// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/arch/amd64"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/legacy/i8042"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/legacy/poweroff"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/legacy/serial"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// ErrAlreadyRun is returned by a second call of Run.
var ErrAlreadyRun = errors.New("vmm: machine already run")

// tssAddr is where KVM_SET_TSS_ADDR places the three pages Intel VMX needs:
// just below the BIOS area at the top of 4 GiB, inside the MMIO gap and away
// from the IOAPIC and LAPIC windows (Firecracker uses the same address).
const tssAddr = 0xfffb_d000

// Machine is one microVM. Create it with New, run it with Run (once), and
// end it with Stop from any goroutine or by cancelling Run's context.
type Machine struct {
	cfg     Config
	console *serial.Device

	stopping atomic.Bool
	started  atomic.Bool

	// panicLine is the console line of a guest kernel panic, once seen: the
	// reset that follows is reported as ExitPanic.
	panicLine atomic.Pointer[string]

	mu    sync.Mutex // guards vcpus (entries are closed, and the slice cleared, at teardown)
	vcpus []*vcpu

	inspectMu sync.Mutex // one Inspect at a time

	exitOnce sync.Once
	exit     Exit
}

// vcpu is one vCPU and the thread that runs it.
type vcpu struct {
	cpu *kvm.VCPU
	tid atomic.Int32 // OS thread running it; 0 until the goroutine starts
	run *kvm.RunData
	// inspectReply is where the vCPU's thread sends its state for a
	// pending Inspect; set and taken under inspectMu.
	inspectMu    sync.Mutex
	inspectReply chan VCPUState
	// serving is the exit reason the thread is serving in this process,
	// ExitUnknown while it is in the guest or idle.
	serving atomic.Uint32
}

// New checks cfg and returns a machine ready to Run. It starts nothing.
func New(cfg Config) (*Machine, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: c}
	return m, nil
}

// ConsoleInput queues bytes for the guest's console (COM1) and returns how
// many were taken; it returns 0 before Run has set the console up.
func (m *Machine) ConsoleInput(p []byte) int {
	m.mu.Lock()
	c := m.console
	m.mu.Unlock()
	if c == nil {
		return 0
	}
	return c.Input(p)
}

// Stop ends the machine: every vCPU leaves KVM_RUN and Run returns
// ExitStopped (unless the guest ended it first). It returns at once and may
// be called any number of times, from any goroutine, before or during Run.
func (m *Machine) Stop() {
	m.stopping.Store(true)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.vcpus {
		v.run.SetImmediateExit(true)
		if tid := v.tid.Load(); tid != 0 {
			kvm.Kick(int(tid))
		}
	}
}

// finish records how the machine ended (the first report wins) and stops it.
func (m *Machine) finish(e Exit) {
	m.exitOnce.Do(func() { m.exit = e })
	m.Stop()
}

// Run boots the machine and serves it until the guest ends it, Stop is
// called or ctx ends. It returns how the machine ended; an error means the
// host failed to build or run it. Everything Run created (vCPU threads, KVM
// descriptors, guest memory) is released before it returns.
func (m *Machine) Run(ctx context.Context) (Exit, error) {
	if !m.started.CompareAndSwap(false, true) {
		return Exit{}, ErrAlreadyRun
	}
	if m.stopping.Load() {
		return Exit{Reason: ExitStopped, VCPU: -1}, nil
	}
	var r resources
	defer r.release()
	defer func() {
		// Devices may run goroutines that touch guest memory: stop them
		// before the memory goes away (r.release runs after this).
		for _, d := range m.cfg.Devices {
			d.Reset()
		}
	}()
	if err := m.build(&r); err != nil {
		return Exit{}, err
	}

	stopWatch := context.AfterFunc(ctx, m.Stop)
	defer stopWatch()

	var (
		wg      sync.WaitGroup
		hostErr error
		errOnce sync.Once
	)
	if r.notify != nil {
		var nwg sync.WaitGroup
		nwg.Go(func() {
			if err := r.notify.run(); err != nil {
				errOnce.Do(func() { hostErr = err })
				m.Stop()
			}
		})
		defer nwg.Wait()
		defer r.notify.stop()
	}
	for _, v := range m.vcpus {
		wg.Go(func() {
			if err := m.runVCPU(v, &r); err != nil {
				errOnce.Do(func() { hostErr = err })
				m.finish(Exit{Reason: ExitStopped, VCPU: v.cpu.ID})
			}
		})
	}
	wg.Wait()

	m.mu.Lock()
	for _, v := range m.vcpus {
		v.cpu.Close()
	}
	m.vcpus = nil
	m.mu.Unlock()

	if hostErr != nil {
		return Exit{}, hostErr
	}
	m.exitOnce.Do(func() { m.exit = Exit{Reason: ExitStopped, VCPU: -1} })
	return m.exit, nil
}

// resources are what Run owns, released in reverse order of creation.
type resources struct {
	sys       *kvm.System
	vm        *kvm.VM
	mem       *memory.Memory
	eventFDs  []int
	notify    *notifier
	pio, mmio bus
}

func (r *resources) release() {
	if r.notify != nil {
		r.notify.close()
	}
	for _, fd := range r.eventFDs {
		unix.Close(fd)
	}
	if r.vm != nil {
		r.vm.Close()
	}
	if r.mem != nil {
		r.mem.Close()
	}
	if r.sys != nil {
		r.sys.Close()
	}
}

// build creates the VM and loads the guest, in order:
//
//  1. open KVM, create the VM, its TSS area, the in-kernel irqchip and PIT;
//  2. map guest RAM around the MMIO gap and register it as memory slots;
//  3. attach the legacy devices (COM1, i8042) and the virtio-mmio devices,
//     each with an irqfd, and add them to the command line;
//  4. load the kernel segments, the boot structures and the initrd;
//  5. create the vCPUs and set their CPUID, MSRs, FPU and LAPIC; vCPU 0
//     gets the entry registers, the others wait for the kernel's INIT/SIPI.
func (m *Machine) build(r *resources) error {
	cfg := &m.cfg
	ram := uint64(cfg.MemoryMiB) << 20
	var err error

	// 1.
	if r.sys, err = kvm.Open(); err != nil {
		return err
	}
	if r.vm, err = r.sys.CreateVM(); err != nil {
		return err
	}
	if err := r.vm.SetTSSAddr(tssAddr); err != nil {
		return err
	}
	if err := r.vm.CreateIRQChip(); err != nil {
		return err
	}
	if err := r.vm.CreatePIT2(); err != nil {
		return err
	}

	// 2.
	var regions []memory.Region
	for _, reg := range amd64.MemoryRegions(ram) {
		regions = append(regions, memory.Region{Base: memory.GuestAddr(reg.Start), Size: reg.Size})
	}
	if r.mem, err = memory.New(regions...); err != nil {
		return fmt.Errorf("vmm: guest memory: %w", err)
	}
	for i, hr := range r.mem.HostRegions() {
		if err := r.vm.SetUserMemoryRegion(kvm.UserMemoryRegion{
			Slot:          uint32(i),
			GuestPhysAddr: hr.GuestPhysAddr,
			MemorySize:    hr.Size,
			UserspaceAddr: uint64(hr.UserspaceAddr),
		}); err != nil {
			return err
		}
	}

	// 3.
	vm := r.vm
	console := serial.New(&panicWatch{out: cfg.Console, seen: &m.panicLine}, func() {
		// COM1 is an ISA edge-triggered line: pulse it.
		vm.IRQLine(serial.COM1IRQ, true)
		vm.IRQLine(serial.COM1IRQ, false)
	})
	if err := r.pio.add(serial.COM1Base, serial.Len, console); err != nil {
		return err
	}
	reset := i8042.New(func() {
		if line := m.panicLine.Load(); line != nil {
			m.finish(Exit{Reason: ExitPanic, VCPU: -1, Detail: *line})
			return
		}
		m.finish(Exit{Reason: ExitReset, VCPU: -1})
	})
	if err := r.pio.add(i8042.Base, i8042.Len, reset); err != nil {
		return err
	}
	power := poweroff.New(func(status uint8) {
		m.finish(Exit{Reason: ExitPowerOff, VCPU: -1, Status: status})
	})
	if err := r.pio.add(poweroff.Port, poweroff.Len, power); err != nil {
		return err
	}
	cmdline := []string{baseCmdline}
	if len(cfg.Devices) > 0 {
		if r.notify, err = newNotifier(); err != nil {
			return err
		}
	}
	for i, dev := range cfg.Devices {
		base, irq, err := amd64.VirtioMMIOSlot(i)
		if err != nil {
			return err
		}
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return fmt.Errorf("vmm: eventfd for virtio device %d: %w", i, err)
		}
		r.eventFDs = append(r.eventFDs, efd)
		if err := r.vm.IRQFD(efd, irq, false); err != nil {
			return err
		}
		t, err := virtio.NewMMIO(virtio.MMIOConfig{
			Device: dev,
			Memory: r.mem,
			Inject: func() { signalEventFD(efd) },
		})
		if err != nil {
			return fmt.Errorf("vmm: virtio device %d: %w", i, err)
		}
		if err := r.mmio.add(base, virtio.MMIOSize, t); err != nil {
			return err
		}
		if err := r.notify.add(r.vm, base, len(dev.QueueMaxSizes()), t); err != nil {
			return err
		}
		cmdline = append(cmdline, fmt.Sprintf("virtio_mmio.device=4K@%#x:%d", base, irq))
	}
	if cfg.Cmdline != "" {
		cmdline = append(cmdline, cfg.Cmdline)
	}

	// 4.
	boot, err := m.load(r.mem, ram, strings.Join(cmdline, " "))
	if err != nil {
		return err
	}

	// 5.
	supported, err := r.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	archCPUID := make([]amd64.CPUIDEntry, len(supported))
	for i, e := range supported {
		archCPUID[i] = amd64.CPUIDEntry(e)
	}
	m.mu.Lock()
	m.console = console
	m.mu.Unlock()
	for i := range cfg.VCPUs {
		cpu, err := r.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		v := &vcpu{cpu: cpu}
		v.run = cpu.RunData()
		m.mu.Lock()
		m.vcpus = append(m.vcpus, v)
		stopping := m.stopping.Load()
		m.mu.Unlock()
		if stopping {
			v.run.SetImmediateExit(true)
		}
		if err := setupVCPU(cpu, archCPUID, cfg.VCPUs, boot); err != nil {
			return err
		}
	}
	return nil
}

// load copies the kernel, the boot structures and the initrd into guest RAM.
func (m *Machine) load(mem *memory.Memory, ram uint64, cmdline string) (*amd64.Boot, error) {
	kf, err := os.Open(m.cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("vmm: kernel: %w", err)
	}
	defer kf.Close()
	st, err := kf.Stat()
	if err != nil {
		return nil, fmt.Errorf("vmm: kernel: %w", err)
	}
	k, err := amd64.ParseELF(kf, st.Size(), ram)
	if err != nil {
		return nil, fmt.Errorf("vmm: kernel %s: %w", m.cfg.Kernel, err)
	}
	var initrd *os.File
	var initrdSize uint64
	if m.cfg.Initrd != "" {
		if initrd, err = os.Open(m.cfg.Initrd); err != nil {
			return nil, fmt.Errorf("vmm: initrd: %w", err)
		}
		defer initrd.Close()
		st, err := initrd.Stat()
		if err != nil {
			return nil, fmt.Errorf("vmm: initrd: %w", err)
		}
		initrdSize = uint64(st.Size())
	}
	boot, err := amd64.Plan(k, amd64.BootConfig{
		RAMBytes:   ram,
		VCPUs:      m.cfg.VCPUs,
		Cmdline:    cmdline,
		InitrdSize: initrdSize,
	})
	if err != nil {
		return nil, fmt.Errorf("vmm: boot plan: %w", err)
	}
	for _, seg := range k.Segments {
		dst, err := mem.Slice(memory.GuestAddr(seg.PhysAddr), seg.FileSize)
		if err != nil {
			return nil, fmt.Errorf("vmm: kernel segment at %#x: %w", seg.PhysAddr, err)
		}
		if _, err := io.ReadFull(seg.Data, dst); err != nil {
			return nil, fmt.Errorf("vmm: read kernel segment at %#x: %w", seg.PhysAddr, err)
		}
		// RAM is fresh anonymous memory, so MemSize-FileSize is already zero.
	}
	for _, b := range boot.Blobs {
		if err := mem.Write(memory.GuestAddr(b.Addr), b.Data); err != nil {
			return nil, fmt.Errorf("vmm: boot structure at %#x: %w", b.Addr, err)
		}
	}
	if initrd != nil {
		dst, err := mem.Slice(memory.GuestAddr(boot.Initrd.Start), boot.Initrd.Size)
		if err != nil {
			return nil, fmt.Errorf("vmm: initrd at %#x: %w", boot.Initrd.Start, err)
		}
		if _, err := io.ReadFull(initrd, dst); err != nil {
			return nil, fmt.Errorf("vmm: read initrd: %w", err)
		}
	}
	return boot, nil
}

func signalEventFD(fd int) {
	var one = [8]byte{1}
	// EAGAIN means the counter is saturated: an interrupt is pending anyway.
	unix.Write(fd, one[:])
}

// VCPUTime returns the CPU time the vCPU threads have spent so far, in
// and out of the guest: each thread's scheduler run time
// (/proc/self/task/TID/schedstat), or its user plus system time where the
// kernel keeps no schedstat. It is zero before Run started the vCPUs and
// after Run returned.
func (m *Machine) VCPUTime() time.Duration {
	m.mu.Lock()
	tids := make([]int32, 0, len(m.vcpus))
	for _, v := range m.vcpus {
		if tid := v.tid.Load(); tid != 0 {
			tids = append(tids, tid)
		}
	}
	m.mu.Unlock()
	var total time.Duration
	for _, tid := range tids {
		total += threadTime(int(tid))
	}
	return total
}

// threadTime reads the CPU time of thread tid of this process; zero when
// the thread is gone.
func threadTime(tid int) time.Duration {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid)); err == nil {
		// "run_ns wait_ns timeslices"
		if f := strings.Fields(string(b)); len(f) > 0 {
			if ns, err := strconv.ParseUint(f[0], 10, 63); err == nil {
				return time.Duration(ns)
			}
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from its closing ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	// utime and stime are fields 14 and 15 of stat(5), in clock ticks of
	// USER_HZ, which is 100 on every Linux ABI.
	ut, _ := strconv.ParseUint(f[11], 10, 63)
	st, _ := strconv.ParseUint(f[12], 10, 63)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
