// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command msb-agent is the guest agent of a microsandbox microVM: /init (PID
// 1) of the per-sandbox initramfs. It plays two roles in two processes of
// the same binary:
//
//   - init (PID 1) mounts the system filesystems, reads the boot
//     configuration (package bootcfg, at bootcfg.Path), assembles the root
//     (read-only image + writable upper joined by overlayfs), switches into
//     it, applies the configuration's root filesystem patches (a failing
//     one ends the boot with its name on the console), sets the host name,
//     /etc/hosts, /etc/resolv.conf and the network,
//     then starts the server and reaps every child it gets (wait4(-1)):
//     the server and every orphan re-parented to it. SIGTERM, SIGPWR,
//     SIGUSR1 and SIGUSR2 (busybox halt/poweroff) power the machine off;
//     SIGINT (ctrl-alt-del; busybox reboot sends SIGTERM and so powers off
//     too) reboots it, which ends a microVM as an i8042 reset. The
//     initramfs copies of the agent and the configuration are deleted
//     before the switch into the root.
//   - server, started by init as a child (the binary re-executed with a
//     hidden argument, not a fork), listens on vsock port
//     bootcfg.AgentPort and serves the agent protocol (package
//     guestagent/guest) inside the assembled root. The processes it runs
//     are its children, waited for by pid; their orphans go to init.
//
// Shutdown: init sends SIGTERM to every process, waits (bounded by the
// configuration's stop grace), sends SIGKILL, waits (bounded), syncs,
// unmounts in reverse order, remounts / read-only, and writes the status to
// the VMM's power-off port (bootcfg.Status). A boot that cannot finish
// prints why on the console ("msb-agent: error: ...") and powers off with a
// non-zero status; it never hangs.
//
// The protocol has no shutdown request yet: the host asks by running
// "kill -TERM 1" (or -INT for a reboot) through an exec.
package main

import (
	"fmt"
	"os"
)

// serveArg is the hidden argument that selects the server role.
const serveArg = "__msb_agent_serve"

func main() {
	if len(os.Args) == 2 && os.Args[1] == serveArg {
		os.Exit(runServer())
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "usage: msb-agent runs as /init (PID 1) of a microsandbox guest; it takes no arguments")
		os.Exit(2)
	}
	runInit()
}

// logf prints an informational line on the console.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "msb-agent: "+format+"\n", args...)
}

// errorf prints an error line on the console.
func errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "msb-agent: error: "+format+"\n", args...)
}
