// SPDX-License-Identifier: Apache-2.0

package vmm_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// loadAddr is where the tiny kernels load and start (16 MiB, where vmlinux
// loads too).
const loadAddr = 0x100_0000

// tinyKernel writes an ELF64 "kernel" whose one segment holds code, entered
// in 32-bit protected mode through a PVH note, as the Machine enters a real
// vmlinux. It returns the file's path.
func tinyKernel(t *testing.T, code []byte) string {
	t.Helper()
	const (
		ehdrSize = 64
		phdrSize = 56
		noteOff  = 0x200
		codeOff  = 0x1000
	)
	note := make([]byte, 0, 24)
	note = binary.LittleEndian.AppendUint32(note, 4)  // namesz ("Xen\0")
	note = binary.LittleEndian.AppendUint32(note, 4)  // descsz
	note = binary.LittleEndian.AppendUint32(note, 18) // XEN_ELFNOTE_PHYS32_ENTRY
	note = append(note, "Xen\x00"...)
	note = binary.LittleEndian.AppendUint32(note, loadAddr)

	img := make([]byte, codeOff+len(code))
	copy(img, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(img[16:], 2)    // ET_EXEC
	le.PutUint16(img[18:], 0x3e) // EM_X86_64
	le.PutUint32(img[20:], 1)
	le.PutUint64(img[24:], loadAddr)
	le.PutUint64(img[32:], ehdrSize) // phoff
	le.PutUint16(img[52:], ehdrSize)
	le.PutUint16(img[54:], phdrSize)
	le.PutUint16(img[56:], 2) // phnum
	ph := img[ehdrSize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[8:], codeOff)
	le.PutUint64(ph[16:], loadAddr)
	le.PutUint64(ph[24:], loadAddr)
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)))
	le.PutUint64(ph[48:], 0x1000)
	ph = ph[phdrSize:]
	le.PutUint32(ph[0:], 4) // PT_NOTE
	le.PutUint64(ph[8:], noteOff)
	le.PutUint64(ph[32:], uint64(len(note)))
	le.PutUint64(ph[40:], uint64(len(note)))
	le.PutUint64(ph[48:], 4)
	copy(img[noteOff:], note)
	copy(img[codeOff:], code)

	path := filepath.Join(t.TempDir(), "kernel")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// 32-bit code fragments.
var (
	spin    = []byte{0xEB, 0xFE}                   // jmp $
	ud2     = []byte{0x0F, 0x0B}                   // #UD with no IDT: triple fault
	reset   = []byte{0xB0, 0xFE, 0xE6, 0x64}       // mov al, 0xfe; out 0x64, al
	comPort = []byte{0xBA, 0xF8, 0x03, 0x00, 0x00} // mov edx, 0x3f8
)

// putc returns code writing c to the port in edx.
func putc(c byte) []byte { return []byte{0xB0, c, 0xEE} } // mov al, c; out dx, al

// puts returns code writing s to the port in edx.
func puts(s string) []byte {
	var b []byte
	for i := range len(s) {
		b = append(b, putc(s[i])...)
	}
	return b
}

// poweroff returns code writing status to the power-off switch.
func poweroff(status byte) []byte {
	return []byte{0xBA, 0x01, 0x05, 0x00, 0x00, 0xB0, status, 0xEE} // mov edx, 0x501; mov al, status; out dx, al
}

func code(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func requireKVM(t *testing.T) {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Skipf("no usable KVM: %v", err)
	}
	sys.Close()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func run(t *testing.T, cfg vmm.Config, timeout time.Duration) vmm.Exit {
	t.Helper()
	m, err := vmm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	exit, err := m.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return exit
}

func TestGuestEndings(t *testing.T) {
	requireKVM(t)
	for _, c := range []struct {
		name    string
		code    []byte
		timeout time.Duration // generous: a loaded machine must not turn an ending into a stop
		want    vmm.ExitReason
	}{
		{"i8042 reset", reset, 30 * time.Second, vmm.ExitReset},
		{"triple fault", ud2, 30 * time.Second, vmm.ExitTripleFault},
		{"context deadline", spin, 200 * time.Millisecond, vmm.ExitStopped},
		{"power-off", poweroff(7), 30 * time.Second, vmm.ExitPowerOff},
		{"panic", code(comPort, puts("[ 1.0] Kernel panic - not syncing: test\r\n"), reset), 30 * time.Second, vmm.ExitPanic},
	} {
		t.Run(c.name, func(t *testing.T) {
			exit := run(t, vmm.Config{Kernel: tinyKernel(t, c.code), MemoryMiB: 32}, c.timeout)
			if exit.Reason != c.want {
				t.Fatalf("exit = %v, want %v", exit, c.want)
			}
			if c.want == vmm.ExitPowerOff && exit.Status != 7 {
				t.Errorf("power-off status = %d, want 7", exit.Status)
			}
			if c.want == vmm.ExitPanic && exit.Detail != "Kernel panic - not syncing: test" {
				t.Errorf("panic detail = %q", exit.Detail)
			}
			if c.want == vmm.ExitTripleFault && (exit.Regs == nil || exit.Regs.RIP < loadAddr) {
				t.Errorf("triple fault exit has regs %+v, want the faulting rip", exit.Regs)
			}
		})
	}
}

func TestConsoleOutput(t *testing.T) {
	requireKVM(t)
	var out syncBuffer
	exit := run(t, vmm.Config{
		Kernel:  tinyKernel(t, code(comPort, putc('o'), putc('k'), putc('\n'), reset)),
		Console: &out,
		VCPUs:   2,
	}, 30*time.Second)
	if exit.Reason != vmm.ExitReset || out.String() != "ok\n" {
		t.Fatalf("exit = %v, console = %q; want reset after \"ok\\n\"", exit, out.String())
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func mappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestStopCyclesLeakNothing starts and stops 50 machines at various points
// of their life and checks that no goroutine, fd or mapping stays behind.
func TestStopCyclesLeakNothing(t *testing.T) {
	requireKVM(t)
	kernel := tinyKernel(t, spin)
	cycle := func(i int) {
		m, err := vmm.New(vmm.Config{Kernel: kernel, MemoryMiB: 32, VCPUs: 1 + i%3})
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			m.Stop() // before Run
		}
		done := make(chan vmm.Exit, 1)
		go func() {
			exit, err := m.Run(context.Background())
			if err != nil {
				t.Error(err)
			}
			done <- exit
		}()
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		m.Stop()
		m.Stop() // idempotent
		select {
		case exit := <-done:
			if exit.Reason != vmm.ExitStopped {
				t.Errorf("cycle %d: exit = %v, want stopped", i, exit)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cycle %d: Run did not return 10s after Stop", i)
		}
		if _, err := m.Run(context.Background()); !errors.Is(err, vmm.ErrAlreadyRun) {
			t.Errorf("second Run = %v, want ErrAlreadyRun", err)
		}
	}
	cycle(1) // warm up lazily created runtime state
	fds, maps, goroutines := openFDs(t), mappings(t), runtime.NumGoroutine()
	for i := range 50 {
		cycle(i)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("goroutines: %d before, %d after 50 cycles", goroutines, n)
	}
	if n := openFDs(t); n > fds {
		t.Errorf("open fds: %d before, %d after 50 cycles", fds, n)
	}
	// The Go heap may map more arenas over time; guest RAM or kvm_run pages
	// left behind would add several mappings per cycle.
	if n := mappings(t); n > maps+10 {
		t.Errorf("mappings: %d before, %d after 50 cycles", maps, n)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  vmm.Config
		want []string
	}{
		{"no kernel", vmm.Config{}, []string{"no kernel"}},
		{"everything wrong", vmm.Config{MemoryMiB: -1, VCPUs: 1000, Devices: make([]virtio.Device, 1)}, []string{"no kernel", "negative", "vcpus", "nil"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := vmm.New(c.cfg)
			if err == nil {
				t.Fatal("New: got nil error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New error %q does not mention %q", err, w)
				}
			}
		})
	}
}
