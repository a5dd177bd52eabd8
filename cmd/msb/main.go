// SPDX-License-Identifier: Apache-2.0

// Command msb is the microsandbox command line and the sandbox process.
//
//	msb run [-memory MiB] [-cpus N] [-name NAME] IMAGE -- CMD [ARG...]
//
// creates a sandbox from IMAGE, runs CMD in it, prints its output, stops
// and removes the sandbox, and exits with CMD's exit code. The hidden mode
// "msb __sandbox DIR" is the process that runs one sandbox's VM; pkg/sandbox
// starts it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: msb run [-memory MiB] [-cpus N] [-name NAME] IMAGE -- CMD [ARG...]")
}

func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	switch args[0] {
	case sandbox.HiddenCommand:
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "msb: __sandbox DIR")
			return 2
		}
		if err := sandbox.RunProcess(context.Background(), args[1]); err != nil {
			fmt.Fprintf(os.Stderr, "msb: sandbox process: %v\n", err)
			return 1
		}
		return 0
	case "run":
		return runCmd(args[1:])
	case "-h", "-help", "--help", "help":
		usage()
		return 0
	}
	fmt.Fprintf(os.Stderr, "msb: unknown command %q\n", args[0])
	usage()
	return 2
}

func runCmd(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	memory := fs.Uint("memory", 0, "guest memory in MiB (default 512)")
	cpus := fs.Uint("cpus", 0, "vCPUs (default 1)")
	name := fs.String("name", "", "sandbox name (default msb-run-PID)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 3 || rest[1] != "--" {
		usage()
		return 2
	}
	image, argv := rest[0], rest[2:]
	if *name == "" {
		*name = "msb-run-" + strconv.Itoa(os.Getpid())
	}
	if *memory > 1<<20 || *cpus > 255 {
		fmt.Fprintln(os.Stderr, "msb: -memory or -cpus out of range")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sb, err := microsandbox.CreateSandbox(ctx, *name,
		microsandbox.WithImage(image),
		microsandbox.WithMemory(uint32(*memory)),
		microsandbox.WithCPUs(uint8(*cpus)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "msb: create: %v\n", err)
		return 1
	}
	code := 0
	out, err := sb.Exec(ctx, argv[0], argv[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "msb: exec: %v\n", err)
		code = 1
		if microsandbox.IsKind(err, microsandbox.ErrExecFailed) {
			code = 127
		}
	} else {
		os.Stdout.Write(out.StdoutBytes())
		os.Stderr.Write(out.StderrBytes())
		code = out.ExitCode()
		if code < 0 {
			code = 137
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = errors.Join(sb.Stop(sctx), microsandbox.RemoveSandbox(sctx, *name))
	if err != nil {
		fmt.Fprintf(os.Stderr, "msb: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
