// SPDX-License-Identifier: Apache-2.0

package vmtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/cpio"
	"github.com/microsandbox-go/microsandbox/internal/vmtest/l1config"
)

// File is a host file to place beside the test binary.
type File struct {
	Src string // host path
	Dst string // path relative to the run directory; default: base name of Src
}

// Config describes one run of a test binary.
type Config struct {
	Binary  string   // test binary on the host
	Args    []string // its arguments
	Env     []string // extra environment, KEY=VALUE
	Files   []File   // files it needs, placed in its working directory
	Mode    Mode     // zero: DetectMode
	Timeout time.Duration
	// Output receives the run's output (in nested mode, the L1 console)
	// live. Nil: os.Stdout.
	Output io.Writer

	// Nested mode only.
	L1Dir     string // vmlinuz and modules/ from l1.sh; default build/l1
	Init      string // the static l1init binary; default build/l1init
	QEMU      string // default qemu-system-x86_64
	MemoryMiB int    // L1 RAM; default 4096
	CPUs      int    // L1 vCPUs; default 2
	// CPUModel is QEMU's -cpu value for L1; default $MSB_E2E_CPU, else
	// DefaultCPUModel.
	CPUModel string
	// KVMAMDParams are L1's kvm-amd module parameters; default
	// $MSB_E2E_KVM_AMD, else DefaultKVMAMDParams.
	KVMAMDParams string
}

// ErrNoExitStatus means the L1 VM ended without reporting the test's exit
// status: it crashed, panicked or was killed.
var ErrNoExitStatus = errors.New("vmtest: L1 VM ended without an exit status")

// Run runs the test binary as cfg says and returns its exit status. An
// error means the run itself failed (no status), including its timeout.
func Run(ctx context.Context, cfg Config) (int, error) {
	if cfg.Mode == "" {
		m, err := DetectMode()
		if err != nil {
			return -1, err
		}
		cfg.Mode = m
	}
	if cfg.Output == nil {
		cfg.Output = os.Stdout
	}
	// Console lines and the child's stderr are written from different
	// goroutines (exec copies stderr with the writer's ReadFrom).
	cfg.Output = &syncWriter{w: cfg.Output}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	for i := range cfg.Files {
		if cfg.Files[i].Dst == "" {
			cfg.Files[i].Dst = filepath.Base(cfg.Files[i].Src)
		}
		if !filepath.IsLocal(cfg.Files[i].Dst) {
			return -1, fmt.Errorf("vmtest: file destination %q must be a relative path inside the run directory", cfg.Files[i].Dst)
		}
	}
	if err := checkStatic(cfg.Binary); err != nil {
		return -1, err
	}
	env := append([]string{fmt.Sprintf("%s=%d", SlowdownEnv, slowdownFor(cfg.Mode))}, cfg.Env...)
	switch cfg.Mode {
	case Native:
		return runNative(ctx, cfg, env)
	case Nested:
		return runNested(ctx, cfg, env)
	}
	return -1, fmt.Errorf("vmtest: unknown mode %q", cfg.Mode)
}

// runNative runs the binary on the host in a temporary directory that holds
// links to its files, as the nested run directory holds copies.
func runNative(ctx context.Context, cfg Config, env []string) (int, error) {
	dir, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(dir)
	for _, f := range cfg.Files {
		src, err := filepath.Abs(f.Src)
		if err != nil {
			return -1, err
		}
		dst := filepath.Join(dir, f.Dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return -1, err
		}
		if err := os.Symlink(src, dst); err != nil {
			return -1, err
		}
	}
	bin, err := filepath.Abs(cfg.Binary)
	if err != nil {
		return -1, err
	}
	cmd := exec.CommandContext(ctx, bin, cfg.Args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = cfg.Output, cfg.Output
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, fmt.Errorf("vmtest: %s: %w", cfg.Binary, ctx.Err())
	case err == nil:
		return 0, nil
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode(), nil
	}
	return -1, fmt.Errorf("vmtest: run %s: %w", cfg.Binary, err)
}

// syncWriter serializes writes from several goroutines.
type syncWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// checkStatic refuses a dynamically linked binary: the L1 initramfs has no
// dynamic loader, and native runs should test what nested runs test.
func checkStatic(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("vmtest: %s is dynamically linked; build it with CGO_ENABLED=0", bin)
		}
	}
	return nil
}

// freezeTimeout is how long the L1 console may stay silent: /init prints a
// heartbeat every l1config.AliveInterval, so only a frozen L1 is this quiet.
const freezeTimeout = 12 * l1config.AliveInterval

// runDir is the working directory of the test inside L1.
const runDir = "/vmtest/run"

func runNested(ctx context.Context, cfg Config, env []string) (int, error) {
	if cfg.L1Dir == "" {
		cfg.L1Dir = "build/l1"
	}
	if cfg.Init == "" {
		cfg.Init = "build/l1init"
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 4096
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.CPUModel == "" {
		cfg.CPUModel = os.Getenv(CPUEnv)
	}
	if cfg.KVMAMDParams == "" {
		cfg.KVMAMDParams = os.Getenv(KVMAMDEnv)
	}
	if cfg.KVMAMDParams == "" {
		cfg.KVMAMDParams = DefaultKVMAMDParams
	}
	if cfg.CPUModel == "" {
		cfg.CPUModel = DefaultCPUModel
	}
	kernel := filepath.Join(cfg.L1Dir, "vmlinuz")
	if _, err := os.Stat(kernel); err != nil {
		return -1, fmt.Errorf("vmtest: L1 kernel missing (%w); run 'make l1'", err)
	}

	nonce := make([]byte, 8)
	rand.Read(nonce)
	nonceHex := hex.EncodeToString(nonce)

	initrd, err := os.CreateTemp("", "vmtest-initrd-*.cpio")
	if err != nil {
		return -1, err
	}
	defer os.Remove(initrd.Name())
	err = writeInitramfs(initrd, cfg, env)
	if cerr := initrd.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return -1, fmt.Errorf("vmtest: build initramfs: %w", err)
	}

	// The L1 machine: q35 under TCG with AMD SVM exposed, one TCG thread
	// per vCPU, the console on the first serial port (our stdout).
	// The CPU model is measured, not chosen for safety: see DefaultCPUModel.
	// -no-reboot turns a panic or reboot into a QEMU exit.
	cmd := exec.CommandContext(ctx, cfg.QEMU,
		"-accel", "tcg,thread=multi",
		"-cpu", cfg.CPUModel,
		"-M", "q35",
		"-smp", fmt.Sprint(cfg.CPUs),
		"-m", fmt.Sprint(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-nographic",
		"-serial", "stdio", "-monitor", "none",
		"-no-reboot",
		"-kernel", kernel,
		"-initrd", initrd.Name(),
		"-append", "console=ttyS0 edd=off panic=-1 loglevel=4 mitigations=off "+l1config.NonceEnv+"="+nonceHex,
	)
	cmd.Stdin = nil
	cmd.Stderr = cfg.Output
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return -1, err
	}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("vmtest: start %s: %w (install qemu-system-x86)", cfg.QEMU, err)
	}

	code, found := -1, false
	done := make(chan struct{})
	lines := make(chan struct{}, 1)
	alive := l1config.AliveLine(nonceHex)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			select {
			case lines <- struct{}{}:
			default:
			}
			if line == alive {
				continue
			}
			if c, ok := l1config.ParseExitLine(line, nonceHex); ok {
				code, found = c, true
			}
			fmt.Fprintln(cfg.Output, line)
		}
		io.Copy(io.Discard, stdout) // a line over 1 MiB: keep QEMU unblocked
	}()
	// A frozen L1 (emulated nested virtualization can livelock) prints
	// nothing, not even /init's heartbeat: end the run early, saying so,
	// instead of waiting for the whole timeout.
	frozen := false
	watch := time.NewTimer(freezeTimeout)
	defer watch.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-lines:
			watch.Reset(freezeTimeout)
		case <-watch.C:
			frozen = true
			fmt.Fprintf(cfg.Output, "vmtest: L1 console silent for %v: the L1 VM froze; killing QEMU\n", freezeTimeout)
			cmd.Process.Kill()
			<-done
			break wait
		}
	}
	werr := cmd.Wait()
	if frozen {
		return -1, fmt.Errorf("%w: L1 VM froze (no console output for %v)", ErrNoExitStatus, freezeTimeout)
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("vmtest: L1 run of %s: %w (QEMU killed)", cfg.Binary, ctx.Err())
	}
	if !found {
		return -1, fmt.Errorf("%w (qemu: %v)", ErrNoExitStatus, werr)
	}
	return code, nil
}

// writeInitramfs lays out the L1 initramfs:
//
//	/init                  l1init
//	/dev/console           so the kernel can give /init a console
//	/vmtest/config.json    what /init runs
//	/vmtest/modules/*.ko   loaded in order: irqbypass, kvm, kvm-amd
//	/vmtest/run/           the test binary and its files; the working dir
func writeInitramfs(w io.Writer, cfg Config, env []string) error {
	a := cpio.NewWriter(w)
	if err := a.Dir("dev", 0o755); err != nil {
		return err
	}
	if err := a.CharDevice("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := addFile(a, "init", cfg.Init, 0o755); err != nil {
		return err
	}
	dirs := map[string]bool{}
	mkdirs := func(p string) error {
		var chain []string
		for d := path.Dir(p); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			chain = append(chain, d)
		}
		for i := len(chain) - 1; i >= 0; i-- {
			dirs[chain[i]] = true
			if err := a.Dir(chain[i], 0o755); err != nil {
				return err
			}
		}
		return nil
	}

	var modules []string
	for _, m := range []string{"irqbypass.ko", "kvm.ko", "kvm-amd.ko"} {
		dst := "vmtest/modules/" + m
		if err := mkdirs(dst); err != nil {
			return err
		}
		if err := addFile(a, dst, filepath.Join(cfg.L1Dir, "modules", m), 0o644); err != nil {
			return err
		}
		modules = append(modules, "/"+dst)
	}

	bin := "vmtest/run/" + filepath.Base(cfg.Binary)
	if err := mkdirs(bin); err != nil {
		return err
	}
	if err := addFile(a, bin, cfg.Binary, 0o755); err != nil {
		return err
	}
	for _, f := range cfg.Files {
		dst := "vmtest/run/" + filepath.ToSlash(f.Dst)
		if err := mkdirs(dst); err != nil {
			return err
		}
		if err := addFile(a, dst, f.Src, 0); err != nil {
			return err
		}
	}

	rc, err := json.Marshal(l1config.Config{
		Argv:         append([]string{"/" + bin}, cfg.Args...),
		Env:          append([]string{"PATH=/usr/bin:/bin", "HOME=/tmp", "TMPDIR=/tmp"}, env...),
		Dir:          runDir,
		Modules:      modules,
		ModuleParams: map[string]string{"kvm-amd.ko": cfg.KVMAMDParams},
	})
	if err != nil {
		return err
	}
	if err := a.File(strings.TrimPrefix(l1config.Path, "/"), 0o644, rc); err != nil {
		return err
	}
	return a.Close()
}

// addFile copies a host file into the archive; perm 0 keeps the host mode.
func addFile(a *cpio.Writer, dst, src string, perm os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	if perm == 0 {
		perm = st.Mode().Perm()
	}
	return a.FileFrom(dst, perm, st.Size(), f)
}
