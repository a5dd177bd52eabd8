// SPDX-License-Identifier: Apache-2.0

package kvmtest

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
)

const (
	// guestMemSize is the guest's whole RAM: one slot at guest address 0.
	guestMemSize = 1 << 20
	// loadAddr is where the program is placed and entered (CS=0, IP=loadAddr).
	loadAddr = 0x1000
	// tssAddr is placed just below 4 GiB, out of the guest's RAM, as
	// KVM_SET_TSS_ADDR requires on Intel (three pages).
	tssAddr = 0xfffbd000
	// maxExits bounds a run so a broken guest cannot spin the test forever.
	maxExits = 1 << 16
)

// PrintProgram returns 16-bit real-mode code that writes msg to I/O port
// `port` one byte at a time and halts. It expects to be loaded at 0x1000 with
// CS and DS based at 0.
func PrintProgram(port uint16, msg string) []byte {
	const msgOffset = 15 // length of the code below
	si := uint16(loadAddr + msgOffset)
	code := []byte{
		0xBE, byte(si), byte(si >> 8), // mov si, msg
		0xBA, byte(port), byte(port >> 8), // mov dx, port
		0xAC,       // loop: lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz done
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp loop
		0xF4, // done: hlt
	}
	return append(append(code, msg...), 0)
}

// Result is what a program did before it halted.
type Result struct {
	// Out holds the bytes written to each port, in order.
	Out map[uint16][]byte
	// Exits counts the VM exits taken.
	Exits int
}

// Run creates a VM with 1 MiB of RAM, loads code at 0x1000, enters it in real
// mode and serves port output until the guest halts. Any other exit, or more
// than 65536 exits, is an error.
func Run(sys *kvm.System, code []byte) (Result, error) {
	res := Result{Out: map[uint16][]byte{}}
	if len(code) > guestMemSize-loadAddr {
		return res, fmt.Errorf("kvmtest: program of %d bytes does not fit", len(code))
	}
	vm, err := sys.CreateVM()
	if err != nil {
		return res, err
	}
	defer vm.Close()
	mem, err := unix.Mmap(-1, 0, guestMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return res, fmt.Errorf("kvmtest: map guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	copy(mem[loadAddr:], code)
	if err := vm.SetUserMemoryRegion(kvm.UserMemoryRegion{
		MemorySize:    guestMemSize,
		UserspaceAddr: kvm.HostAddr(mem),
	}); err != nil {
		return res, err
	}
	if err := vm.SetTSSAddr(tssAddr); err != nil {
		return res, err
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		return res, err
	}
	defer cpu.Close()

	sregs, err := cpu.Sregs()
	if err != nil {
		return res, err
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	sregs.DS.Base, sregs.DS.Selector = 0, 0
	if err := cpu.SetSregs(sregs); err != nil {
		return res, err
	}
	if err := cpu.SetRegs(kvm.Regs{RIP: loadAddr, RFLAGS: 2}); err != nil {
		return res, err
	}

	for res.Exits < maxExits {
		run, err := cpu.Run()
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return res, err
		}
		res.Exits++
		switch r := run.Reason(); r {
		case kvm.ExitHLT:
			return res, nil
		case kvm.ExitIO:
			dir, port, _, data, err := run.IO()
			if err != nil {
				return res, err
			}
			if dir == kvm.IOOut {
				res.Out[port] = append(res.Out[port], data...)
			} else {
				clear(data)
			}
		default:
			regs, _ := cpu.Regs()
			return res, fmt.Errorf("kvmtest: unexpected exit %v at rip %#x", r, regs.RIP)
		}
	}
	return res, fmt.Errorf("kvmtest: guest did not halt within %d exits", maxExits)
}

// Output returns the bytes written to port as a string, trimmed of a
// trailing NUL (for messages).
func (r Result) Output(port uint16) string {
	return string(bytes.TrimRight(r.Out[port], "\x00"))
}
