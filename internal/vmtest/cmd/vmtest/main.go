// SPDX-License-Identifier: Apache-2.0

// Command vmtest runs a Go test binary where a working KVM is, natively or
// inside the nested L1 VM (see package vmtest), and exits with its status.
//
//	vmtest [flags] BINARY [ARGS...]
//	vmtest -file build/vmlinux -timeout 20m build/e2e.test -test.v
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/vmtest"
)

type envList []string

func (e *envList) String() string { return fmt.Sprint(*e) }

func (e *envList) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

type fileList []vmtest.File

func (f *fileList) String() string { return fmt.Sprint(*f) }

func (f *fileList) Set(v string) error {
	src, dst, _ := strings.Cut(v, ":")
	*f = append(*f, vmtest.File{Src: src, Dst: dst})
	return nil
}

func main() {
	var (
		cfg     vmtest.Config
		files   fileList
		env     envList
		mode    string
		perTest bool
		retries int
	)
	flag.IntVar(&retries, "retries", 0, "with -per-test: run a failed test again in a fresh VM up to this many times; every retry is reported")
	flag.BoolVar(&perTest, "per-test", false, "run each top-level test of a Go test binary in a VM of its own (-test.run=^Name$), so one test's leftovers cannot disturb the next")
	flag.Var(&env, "env", "`KEY=VALUE` for the test binary's environment (repeatable)")
	flag.Var(&files, "file", "`SRC[:DST]` host file to place in the run directory (repeatable)")
	flag.StringVar(&mode, "mode", "", "native or nested (default: $MSB_E2E_MODE, else detected)")
	flag.DurationVar(&cfg.Timeout, "timeout", 30*time.Minute, "wall-clock limit of the whole run")
	flag.StringVar(&cfg.L1Dir, "l1", "build/l1", "L1 kernel and modules (nested)")
	flag.StringVar(&cfg.Init, "init", "build/l1init", "static l1init binary (nested)")
	flag.IntVar(&cfg.MemoryMiB, "mem", 4096, "L1 memory in MiB (nested)")
	flag.IntVar(&cfg.CPUs, "cpus", 2, "L1 vCPUs (nested)")
	flag.StringVar(&cfg.QEMU, "qemu", "", "QEMU binary for L1 (nested; default qemu-system-x86_64 on PATH)")
	flag.StringVar(&cfg.CPUModel, "cpu", "", "L1 CPU model, QEMU's -cpu value (nested; default: $"+vmtest.CPUEnv+", else "+vmtest.DefaultCPUModel+")")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: vmtest [flags] BINARY [ARGS...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 {
		flag.Usage()
		os.Exit(2)
	}
	cfg.Binary, cfg.Args, cfg.Files, cfg.Env = flag.Arg(0), flag.Args()[1:], files, env
	if mode != "" {
		cfg.Mode = vmtest.Mode(mode)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if perTest {
		os.Exit(runPerTest(ctx, cfg, retries))
	}
	start := time.Now()
	code, err := vmtest.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "vmtest: %s exited %d after %v\n", cfg.Binary, code, time.Since(start).Round(time.Millisecond))
	os.Exit(code)
}

// runPerTest lists the binary's top-level tests (running it on the host
// with -test.list, which needs no KVM) and runs each in a fresh VM, sharing
// cfg.Timeout among them; a failed test runs again in a fresh VM up to
// retries times, and each retry is printed so flakes stay visible. It
// returns the first non-zero final status, after running every test, and
// prints a summary.
func runPerTest(ctx context.Context, cfg vmtest.Config, retries int) int {
	bin, err := filepath.Abs(cfg.Binary)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: %v\n", err)
		return 1
	}
	// A -test.run of the caller selects which tests get a VM.
	pattern, args := ".", []string{}
	for i := 0; i < len(cfg.Args); i++ {
		a := cfg.Args[i]
		if v, ok := strings.CutPrefix(a, "-test.run="); ok {
			pattern = v
			continue
		}
		if a == "-test.run" && i+1 < len(cfg.Args) {
			pattern = cfg.Args[i+1]
			i++
			continue
		}
		args = append(args, a)
	}
	cfg.Args = args
	out, err := exec.CommandContext(ctx, bin, "-test.list", pattern).Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: list the tests of %s: %v\n", cfg.Binary, err)
		return 1
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Test") {
			names = append(names, l)
		}
	}
	if len(names) == 0 {
		fmt.Fprintf(os.Stderr, "vmtest: %s lists no tests\n", cfg.Binary)
		return 1
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		cfg.Timeout = 0
	}
	first, failed, retried := 0, []string{}, []string{}
	start := time.Now()
	for _, name := range names {
		cfg.Args = append(append([]string{}, args...), "-test.run=^"+name+"$")
		code := 0
		for try := 0; try <= retries; try++ {
			if try > 0 {
				fmt.Fprintf(os.Stderr, "vmtest: RETRY %d of %s in a fresh VM after exit %d (a flake to investigate)\n", try, name, code)
				retried = append(retried, name)
			}
			t0 := time.Now()
			var err error
			code, err = vmtest.Run(ctx, cfg)
			if err != nil {
				fmt.Fprintf(os.Stderr, "vmtest: %s: %v\n", name, err)
				code = 1
			}
			fmt.Fprintf(os.Stderr, "vmtest: %s exited %d after %v\n", name, code, time.Since(t0).Round(time.Millisecond))
			if code == 0 || ctx.Err() != nil {
				break
			}
		}
		if code != 0 {
			failed = append(failed, name)
			if first == 0 {
				first = code
			}
		}
	}
	fmt.Fprintf(os.Stderr, "vmtest: %d tests, %d failed %v, %d retried %v, after %v\n",
		len(names), len(failed), failed, len(retried), retried, time.Since(start).Round(time.Millisecond))
	return first
}
