// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command guestinit is /init of the end-to-end tests' microVMs: it reports
// what the guest sees (vCPUs online, memory, kernel) on the console, runs the
// checks its command line asks for, and reboots, which ends the machine.
//
// Console lines have the form "guestinit: key=value"; the tests parse them.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
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
	report("done", "1")
	unix.Sync()
	// With reboot=k the kernel pulses the i8042 reset line: the VMM ends
	// the machine with ExitReset.
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
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
