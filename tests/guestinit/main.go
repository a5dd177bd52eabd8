// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command guestinit is /init of the end-to-end tests' microVMs: it reports
// what the guest sees (vCPUs online, memory, kernel) on the console, runs the
// checks its command line asks for, and ends the machine the way
// msb_end=reboot|poweroff|exit says (default reboot; exit makes the kernel
// panic, as PID 1 must not exit).
//
// Console lines have the form "guestinit: key=value"; the tests parse them.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/internal/portio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/legacy/poweroff"
)

func report(key, format string, args ...any) {
	fmt.Printf("guestinit: %s=%s\n", key, fmt.Sprintf(format, args...))
}

func main() {
	for _, m := range []struct{ fstype, target string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"},
	} {
		os.MkdirAll(m.target, 0o755)
		if err := unix.Mount(m.fstype, m.target, m.fstype, 0, ""); err != nil {
			report("error", "mount %s: %v", m.target, err)
		}
	}
	report("ready", "1")
	online, _ := os.ReadFile("/sys/devices/system/cpu/online")
	report("cpus_online", "%s", strings.TrimSpace(string(online)))
	report("memtotal_kib", "%d", meminfo("MemTotal"))
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		report("kernel", "%s", unix.ByteSliceToString(uts.Release[:]))
	}
	for _, check := range strings.Split(param("msb_checks"), ",") {
		switch check {
		case "blk":
			checkBlk()
		case "rng":
			checkRNG()
		case "vsockping":
			checkVsockPing()
		case "net":
			checkNet()
		case "share":
			checkShare()
		case "vsock":
			mib, _ := strconv.Atoi(param("msb_vsock_mib"))
			checkVsock(max(mib, 1))
		}
	}
	report("done", "1")
	unix.Sync()
	switch param("msb_end") {
	case "poweroff":
		if err := portio.WriteByte(poweroff.Port, 0); err != nil {
			report("error", "%v", err)
		}
	case "exit":
		os.Exit(3)
	}
	// With reboot=k the kernel pulses the i8042 reset line: the VMM ends
	// the machine with ExitReset.
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

// param returns the value of key=value on the kernel command line.
func param(key string) string {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func meminfo(key string) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kib int64
		if _, err := fmt.Sscanf(sc.Text(), key+": %d kB", &kib); err == nil {
			return kib
		}
	}
	return -1
}
