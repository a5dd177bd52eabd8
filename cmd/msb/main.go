// SPDX-License-Identifier: Apache-2.0

// Command msb is the microsandbox command line and the sandbox process.
//
//	msb run [flags] IMAGE [-- CMD [ARG...]]   create, run a command, stop, remove
//	msb create [flags] IMAGE                  create and boot, detached
//	msb start NAME...                         boot stopped sandboxes, detached
//	msb stop [-f] [-t SECS] NAME...           stop (or kill, -f) sandboxes
//	msb rm [-f] NAME...                       remove stopped sandboxes (-f stops first)
//	msb ls [--json]                           list sandboxes
//	msb ps [--json]                           list running sandboxes
//	msb exec [flags] NAME -- CMD [ARG...]     run a command in a sandbox
//	msb shell [flags] NAME [-- CMD...]        interactive terminal in a sandbox
//	msb cp SRC DST                            copy files; NAME:/path names a guest path
//	msb metrics [--json] [NAME]               sample running sandboxes
//	msb pull REF | images | rmi REF...        manage images
//	msb volume create|ls|rm                   manage named volumes
//	msb version                               print the version
//
// msb run and msb exec exit with the command's exit code (127: it did not
// start). The hidden mode "msb __sandbox DIR" is the process that runs one
// sandbox's VM; pkg/sandbox starts it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

const usageText = `usage: msb COMMAND [ARGS]

commands:
  run [flags] IMAGE [-- CMD [ARG...]]   create a sandbox, run CMD (default: the image's), remove it
  create [flags] IMAGE                  create and boot a detached sandbox
  start NAME...                         boot stopped sandboxes (detached)
  stop [-f] [-t SECS] NAME...           stop sandboxes (-f: kill)
  rm [-f] NAME...                       remove stopped sandboxes (-f: stop first)
  ls [--json]                           list sandboxes
  ps [--json]                           list running sandboxes
  exec [flags] NAME -- CMD [ARG...]     run a command in a running sandbox
  shell [flags] NAME [-- CMD [ARG...]]  attach this terminal to a shell (or CMD) in a sandbox
  cp SRC DST                            copy a file; NAME:/path is a guest path
  metrics [--json] [NAME]               sample running sandboxes
  pull [--insecure] REF                 pull an image and prepare its root filesystem
  images [--json]                       list stored images
  rmi [-f] REF...                       remove stored images (-f: even in use)
  volume create|ls|rm                   manage named volumes
  install                               copy msb, the kernel and the agent into $MSB_HOME/bin
  version                               print the version

Run "msb COMMAND -h" for a command's flags.`

func usage() { fmt.Fprintln(os.Stderr, usageText) }

type command func(ctx context.Context, args []string) int

var commands = map[string]command{
	"run":     runCmd,
	"create":  createCmd,
	"start":   startCmd,
	"stop":    stopCmd,
	"kill":    killCmd,
	"rm":      rmCmd,
	"remove":  rmCmd,
	"ls":      lsCmd,
	"list":    lsCmd,
	"ps":      psCmd,
	"status":  psCmd,
	"exec":    execCmd,
	"shell":   shellCmd,
	"cp":      cpCmd,
	"copy":    cpCmd,
	"metrics": metricsCmd,
	"pull":    pullCmd,
	"images":  imagesCmd,
	"rmi":     rmiCmd,
	"volume":  volumeCmd,
	"vol":     volumeCmd,
	"version": versionCmd,
	"install": installCmd,
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
	case "-h", "-help", "--help", "help":
		fmt.Println(usageText)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "msb: unknown command %q\n", args[0])
		usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd(ctx, args[1:])
}

// fail prints an error and returns the exit status 1.
func fail(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "msb: "+format+"\n", a...)
	return 1
}
