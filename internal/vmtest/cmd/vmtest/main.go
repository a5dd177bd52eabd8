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
	"os/signal"
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
		cfg   vmtest.Config
		files fileList
		env   envList
		mode  string
	)
	flag.Var(&env, "env", "`KEY=VALUE` for the test binary's environment (repeatable)")
	flag.Var(&files, "file", "`SRC[:DST]` host file to place in the run directory (repeatable)")
	flag.StringVar(&mode, "mode", "", "native or nested (default: $MSB_E2E_MODE, else detected)")
	flag.DurationVar(&cfg.Timeout, "timeout", 30*time.Minute, "wall-clock limit of the whole run")
	flag.StringVar(&cfg.L1Dir, "l1", "build/l1", "L1 kernel and modules (nested)")
	flag.StringVar(&cfg.Init, "init", "build/l1init", "static l1init binary (nested)")
	flag.IntVar(&cfg.MemoryMiB, "mem", 4096, "L1 memory in MiB (nested)")
	flag.IntVar(&cfg.CPUs, "cpus", 2, "L1 vCPUs (nested)")
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
	start := time.Now()
	code, err := vmtest.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "vmtest: %s exited %d after %v\n", cfg.Binary, code, time.Since(start).Round(time.Millisecond))
	os.Exit(code)
}
