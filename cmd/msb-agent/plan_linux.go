// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

// Where the root is assembled inside the initramfs. After the switch these
// mounts are hidden below the new root and only the overlay refers to them.
const (
	lowerDir = "/msb/lower"
	rwDir    = "/msb/rw"
	newRoot  = "/msb/root"
)

type opKind int

const (
	opMkdir opKind = iota + 1
	opMount
	opMove
	// opReadahead sets the read-ahead window of the file system mounted at
	// target (its backing device info in sysfs) to readaheadKiB.
	opReadahead
)

// shareReadaheadKiB is the read-ahead window of a virtio-fs mount. The
// kernel gives FUSE 128 KiB, so a sequential read is a request and an
// interrupt per 128 KiB. Measured in the nested harness (512 MiB read cold
// through a share): 128 KiB 4.22 s and 3,200 interrupts, 1 MiB 2.27 s and
// 447, 4 MiB 2.01 s and 114 (several requests of the server's 1 MiB
// maximum in flight).
const shareReadaheadKiB = 4096

// step is one action of a mount plan. Plans are data so that the tests can
// check them without mounting anything.
type step struct {
	op     opKind
	source string
	target string
	fstype string
	flags  uintptr
	data   string
	mode   os.FileMode // opMkdir
	kib    int         // opReadahead
	// waitDevice makes the step wait (bounded) for source to appear, for
	// block devices the kernel may still be probing.
	waitDevice bool
}

func (s step) String() string {
	switch s.op {
	case opMkdir:
		return "mkdir " + s.target
	case opMove:
		return fmt.Sprintf("move %s to %s", s.source, s.target)
	case opReadahead:
		return fmt.Sprintf("readahead %s %d KiB", s.target, s.kib)
	}
	var opts []string
	if s.flags&unix.MS_RDONLY != 0 {
		opts = append(opts, "ro")
	}
	if s.data != "" {
		opts = append(opts, s.data)
	}
	str := fmt.Sprintf("mount %s %s on %s", s.fstype, s.source, s.target)
	if len(opts) > 0 {
		str += " (" + strings.Join(opts, ",") + ")"
	}
	return str
}

// earlyPlan mounts what init needs in the initramfs: /proc, /sys and /dev
// (devtmpfs: the block devices and the console).
func earlyPlan() []step {
	return []step{
		{op: opMkdir, target: "/proc", mode: 0o555},
		{op: opMount, source: "proc", target: "/proc", fstype: "proc", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{op: opMkdir, target: "/sys", mode: 0o555},
		{op: opMount, source: "sysfs", target: "/sys", fstype: "sysfs", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{op: opMkdir, target: "/dev", mode: 0o755},
		{op: opMount, source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: unix.MS_NOSUID, data: "mode=0755"},
	}
}

// rootPlan assembles the root at newRoot from c (defaults applied):
//
//  1. the read-only image on lowerDir;
//  2. the writable layer on rwDir (tmpfs, or the host's ext4 disk) with
//     upper/ and work/ in it;
//  3. overlayfs of the two on newRoot;
//  4. /proc, /sys and /dev moved into it, then /dev/pts (a new devpts
//     instance), /dev/shm, /run and /tmp mounted there.
//
// The switch itself (switchRoot) and the configured mounts (mountsPlan)
// follow.
func rootPlan(c *bootcfg.Config) []step {
	r := c.Root
	p := []step{
		{op: opMkdir, target: lowerDir, mode: 0o700},
		{op: opMount, source: r.Device, target: lowerDir, fstype: r.FSType, flags: unix.MS_RDONLY, waitDevice: true},
		{op: opMkdir, target: rwDir, mode: 0o700},
	}
	if r.Upper.Device == "" {
		p = append(p, step{op: opMount, source: "tmpfs", target: rwDir, fstype: "tmpfs", data: "mode=0755,size=" + r.Upper.Size})
	} else {
		p = append(p, step{op: opMount, source: r.Upper.Device, target: rwDir, fstype: "ext4", waitDevice: true})
	}
	p = append(p,
		step{op: opMkdir, target: rwDir + "/upper", mode: 0o755},
		step{op: opMkdir, target: rwDir + "/work", mode: 0o700},
		step{op: opMkdir, target: newRoot, mode: 0o755},
		step{op: opMount, source: "overlay", target: newRoot, fstype: "overlay",
			data: "lowerdir=" + lowerDir + ",upperdir=" + rwDir + "/upper,workdir=" + rwDir + "/work"},
	)
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		p = append(p,
			step{op: opMkdir, target: newRoot + d, mode: 0o755},
			step{op: opMove, source: d, target: newRoot + d})
	}
	const nosuidNodev = unix.MS_NOSUID | unix.MS_NODEV
	p = append(p,
		step{op: opMkdir, target: newRoot + "/dev/pts", mode: 0o755},
		// gid 5 is the conventional tty group (Debian's base-passwd).
		step{op: opMount, source: "devpts", target: newRoot + "/dev/pts", fstype: "devpts",
			flags: unix.MS_NOSUID | unix.MS_NOEXEC, data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		step{op: opMkdir, target: newRoot + "/dev/shm", mode: 0o755},
		step{op: opMount, source: "shm", target: newRoot + "/dev/shm", fstype: "tmpfs", flags: nosuidNodev, data: "mode=1777,size=" + bootcfg.DefaultTmpfsSize},
		step{op: opMkdir, target: newRoot + "/run", mode: 0o755},
		step{op: opMount, source: "tmpfs", target: newRoot + "/run", fstype: "tmpfs", flags: nosuidNodev, data: "mode=0755,size=10%"},
		step{op: opMkdir, target: newRoot + "/tmp", mode: 0o755},
		step{op: opMount, source: "tmpfs", target: newRoot + "/tmp", fstype: "tmpfs", flags: nosuidNodev, data: "mode=1777,size=" + c.TmpSize},
	)
	return p
}

// mountsPlan mounts c.Mounts inside the root, after the switch.
func mountsPlan(c *bootcfg.Config) []step {
	var p []step
	for _, m := range c.Mounts {
		var flags uintptr
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		var data []string
		for _, o := range m.Options {
			if f, ok := mountFlag(o); ok {
				flags |= f
			} else {
				data = append(data, o)
			}
		}
		src := m.Source
		if m.FSType == "tmpfs" {
			src = "tmpfs"
		}
		p = append(p,
			step{op: opMkdir, target: m.Target, mode: 0o755},
			step{op: opMount, source: src, target: m.Target, fstype: m.FSType, flags: flags,
				data: strings.Join(data, ","), waitDevice: strings.HasPrefix(src, "/dev/")})
		if m.FSType == "virtiofs" {
			p = append(p, step{op: opReadahead, target: m.Target, kib: shareReadaheadKiB})
		}
	}
	return p
}

func mountFlag(o string) (uintptr, bool) {
	switch o {
	case "nosuid":
		return unix.MS_NOSUID, true
	case "nodev":
		return unix.MS_NODEV, true
	case "noexec":
		return unix.MS_NOEXEC, true
	case "noatime":
		return unix.MS_NOATIME, true
	case "relatime":
		return unix.MS_RELATIME, true
	}
	return 0, false
}

// deviceWait bounds the wait for a block device node. Builtin virtio-mmio
// devices are probed before init runs, so this only covers a slow probe.
var deviceWait = 5 * time.Second

// mounts runs plans and remembers what it mounted, for the unmount at
// shutdown. It is used by init's goroutine only.
type mounts struct {
	// mounted holds the mount points, in mount order, as seen from the
	// current root.
	mounted []string
}

// run executes p, stopping at the first failure.
func (m *mounts) run(p []step) error {
	for _, s := range p {
		if err := m.do(s); err != nil {
			return fmt.Errorf("%v: %w", s, err)
		}
	}
	return nil
}

func (m *mounts) do(s step) error {
	switch s.op {
	case opMkdir:
		return os.MkdirAll(s.target, s.mode)
	case opMove:
		if err := unix.Mount(s.source, s.target, "", unix.MS_MOVE, ""); err != nil {
			return err
		}
		for i, t := range m.mounted {
			if t == s.source {
				m.mounted[i] = s.target
			}
		}
		if !slices.Contains(m.mounted, s.target) {
			m.mounted = append(m.mounted, s.target)
		}
		return nil
	case opMount:
		if s.waitDevice {
			if err := waitFor(s.source, deviceWait); err != nil {
				return err
			}
		}
		if err := unix.Mount(s.source, s.target, s.fstype, s.flags, s.data); err != nil {
			return err
		}
		m.mounted = append(m.mounted, s.target)
		return nil
	case opReadahead:
		var st unix.Stat_t
		if err := unix.Stat(s.target, &st); err != nil {
			return err
		}
		bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
		return os.WriteFile(bdi, []byte(strconv.Itoa(s.kib)), 0)
	}
	panic(fmt.Sprintf("msb-agent: unknown plan step %d", s.op)) // plans are built by this package only
}

// waitFor waits until path exists, at most d.
func waitFor(p string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		_, err := os.Stat(p)
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v: %w", p, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rebase records a switch of the root to dir: mount points below it get
// their path in the new root, the others become unreachable and are
// forgotten (only the overlay holds them).
func (m *mounts) rebase(dir string) {
	var kept []string
	for _, t := range m.mounted {
		if rel, ok := strings.CutPrefix(t, dir); ok && (rel == "" || rel[0] == '/') {
			if rel != "" {
				kept = append(kept, path.Clean(rel))
			}
		}
	}
	m.mounted = kept
}

// unmountAll unmounts what m mounted in reverse order, best effort: data
// was synced before, and the pseudo filesystems that init keeps using
// (/proc, /sys, /dev) are left alone. A busy mount is detached.
func (m *mounts) unmountAll() {
	for _, t := range slices.Backward(m.mounted) {
		switch t {
		case "/proc", "/sys", "/dev":
			continue
		}
		if err := unix.Unmount(t, 0); err != nil {
			if err2 := unix.Unmount(t, unix.MNT_DETACH); err2 != nil {
				errorf("unmount %s: %v", t, err)
			}
		}
	}
	m.mounted = slices.DeleteFunc(m.mounted, func(t string) bool { return t != "/proc" && t != "/sys" && t != "/dev" })
}

// switchRoot makes dir the root of init and of everything it starts later:
// the mount is moved onto / and init chroots into it, as switch_root does
// (pivot_root cannot leave the initramfs: rootfs cannot be unmounted).
func switchRoot(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("switch root: chdir %s: %w", dir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: chdir /: %w", err)
	}
	return nil
}
