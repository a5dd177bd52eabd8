// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

func parse(t *testing.T, s string) *bootcfg.Config {
	t.Helper()
	c, err := bootcfg.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func planStrings(p []step) []string {
	var s []string
	for _, st := range p {
		s = append(s, st.String())
	}
	return s
}

func TestRootPlanTmpfsUpper(t *testing.T) {
	got := planStrings(rootPlan(parse(t, `{"tmp_size": "32m"}`)))
	want := []string{
		"mkdir /msb/lower",
		"mount erofs /dev/vda on /msb/lower (ro)",
		"mkdir /msb/rw",
		"mount tmpfs tmpfs on /msb/rw (mode=0755,size=50%)",
		"mkdir /msb/rw/upper",
		"mkdir /msb/rw/work",
		"mkdir /msb/root",
		"mount overlay overlay on /msb/root (lowerdir=/msb/lower,upperdir=/msb/rw/upper,workdir=/msb/rw/work)",
		"mkdir /msb/root/proc", "move /proc to /msb/root/proc",
		"mkdir /msb/root/sys", "move /sys to /msb/root/sys",
		"mkdir /msb/root/dev", "move /dev to /msb/root/dev",
		"mkdir /msb/root/dev/pts",
		"mount devpts devpts on /msb/root/dev/pts (newinstance,ptmxmode=0666,mode=0620,gid=5)",
		"mkdir /msb/root/dev/shm",
		"mount tmpfs shm on /msb/root/dev/shm (mode=1777,size=50%)",
		"mkdir /msb/root/run",
		"mount tmpfs tmpfs on /msb/root/run (mode=0755,size=10%)",
		"mkdir /msb/root/tmp",
		"mount tmpfs tmpfs on /msb/root/tmp (mode=1777,size=32m)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rootPlan =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRootPlanDiskUpper(t *testing.T) {
	p := rootPlan(parse(t, `{"root": {"device": "/dev/vdb", "fstype": "ext4", "upper": {"device": "/dev/vdc"}}}`))
	if got := p[1].String(); got != "mount ext4 /dev/vdb on /msb/lower (ro)" || !p[1].waitDevice {
		t.Errorf("lower step = %q (wait %v)", got, p[1].waitDevice)
	}
	if got := p[3].String(); got != "mount ext4 /dev/vdc on /msb/rw" || !p[3].waitDevice {
		t.Errorf("upper step = %q (wait %v)", got, p[3].waitDevice)
	}
}

func TestMountsPlan(t *testing.T) {
	p := mountsPlan(parse(t, `{"mounts": [
		{"source": "/dev/vdc", "target": "/data", "fstype": "ext4", "read_only": true, "options": ["noatime", "nosuid", "errors=remount-ro"]},
		{"source": "ignored", "target": "/scratch", "fstype": "tmpfs", "options": ["size=16m", "mode=700"]}]}`))
	if len(p) != 4 {
		t.Fatalf("mountsPlan = %v", planStrings(p))
	}
	data := p[1]
	if data.flags != unix.MS_RDONLY|unix.MS_NOATIME|unix.MS_NOSUID || data.data != "errors=remount-ro" || !data.waitDevice {
		t.Errorf("data mount = %+v", data)
	}
	if got := p[3].String(); got != "mount tmpfs tmpfs on /scratch (size=16m,mode=700)" || p[3].waitDevice {
		t.Errorf("tmpfs mount = %q", got)
	}
}

// TestMountsPlanShare: a virtio-fs mount is followed by the step that
// widens its read-ahead window.
func TestMountsPlanShare(t *testing.T) {
	p := mountsPlan(parse(t, `{"mounts": [{"source": "msb-share-0", "target": "/app/src", "fstype": "virtiofs", "read_only": true}]}`))
	want := []string{"mkdir /app/src", "mount virtiofs msb-share-0 on /app/src (ro)", fmt.Sprintf("readahead /app/src %d KiB", shareReadaheadKiB)}
	if got := planStrings(p); !reflect.DeepEqual(got, want) {
		t.Errorf("mountsPlan =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMountsRebase(t *testing.T) {
	m := mounts{mounted: []string{"/proc", "/msb/lower", "/msb/rw", "/msb/root", "/msb/root/dev/pts", "/msb/rootfs/x"}}
	m.rebase("/msb/root")
	if want := []string{"/dev/pts"}; !reflect.DeepEqual(m.mounted, want) {
		t.Errorf("rebase = %q, want %q", m.mounted, want)
	}
}

// TestMountsRunMkdir runs a plan of mkdir steps (no privileges needed) and
// checks that a failing step names itself.
func TestMountsRunMkdir(t *testing.T) {
	dir := t.TempDir()
	var m mounts
	if err := m.run([]step{{op: opMkdir, target: dir + "/a/b", mode: 0o755}}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir + "/a/b"); err != nil || !fi.IsDir() {
		t.Fatalf("mkdir step: %v", err)
	}
	old := deviceWait
	deviceWait = 50 * time.Millisecond
	defer func() { deviceWait = old }()
	err := m.run([]step{{op: opMount, source: dir + "/missing", target: dir, fstype: "ext4", waitDevice: true}})
	if err == nil || !strings.Contains(err.Error(), "mount ext4 "+dir+"/missing on "+dir+": ") || !strings.Contains(err.Error(), "did not appear") {
		t.Errorf("mount of a missing device = %v", err)
	}
	if len(m.mounted) != 0 {
		t.Errorf("mounted = %q after failures", m.mounted)
	}
}

func TestEtcFiles(t *testing.T) {
	c := parse(t, `{"hostname": "box", "hosts": [{"ip": "10.0.0.9", "names": ["db", "db.internal"]}],
		"network": {"dns": ["10.0.2.3", "fd00::3"], "search": ["corp.example"]}}`)
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tbox\n10.0.0.9\tdb db.internal\n"
	if got := hostsFile(c); got != want {
		t.Errorf("hostsFile = %q, want %q", got, want)
	}
	if got, want := resolvConf(c.Network), "nameserver 10.0.2.3\nnameserver fd00::3\nsearch corp.example\n"; got != want {
		t.Errorf("resolvConf = %q, want %q", got, want)
	}
	if got := resolvConf(nil); got != "" {
		t.Errorf("resolvConf(nil) = %q, want the image's file left alone", got)
	}
}

func TestNetlinkRoute(t *testing.T) {
	r, err := netlinkRoute(2, bootcfg.Route{Destination: "default", Gateway: "10.0.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkIndex != 2 || r.Dst.String() != "0.0.0.0/0" || r.Gw.String() != "10.0.2.2" || r.Scope != netlink.SCOPE_UNIVERSE {
		t.Errorf("default route = %+v", r)
	}
	r, err = netlinkRoute(2, bootcfg.Route{Destination: "fd00::/64"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Dst.String() != "fd00::/64" || r.Gw != nil || r.Scope != netlink.SCOPE_LINK {
		t.Errorf("on-link route = %+v", r)
	}
	if _, err := netlinkRoute(2, bootcfg.Route{Destination: "default"}); err == nil {
		t.Error("default route without gateway accepted")
	}
}

func TestServerEnv(t *testing.T) {
	if got := serverEnv([]string{"A=1"}); !reflect.DeepEqual(got, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"}) {
		t.Errorf("serverEnv without PATH = %q", got)
	}
	if got := serverEnv([]string{"PATH=/x", "A=1"}); !reflect.DeepEqual(got, []string{"PATH=/x", "A=1"}) {
		t.Errorf("serverEnv with PATH = %q", got)
	}
}

func TestSignalAction(t *testing.T) {
	for sig, want := range map[os.Signal]action{
		unix.SIGTERM: actPowerOff, unix.SIGUSR1: actPowerOff, unix.SIGUSR2: actPowerOff,
		unix.SIGPWR: actPowerOff, unix.SIGINT: actReboot, unix.SIGHUP: 0,
	} {
		if got, _ := signalAction(sig); got != want {
			t.Errorf("signalAction(%v) = %v, want %v", sig, got, want)
		}
	}
}

func TestRestartPolicy(t *testing.T) {
	p := restartPolicy{max: 3, window: time.Minute}
	now := time.Unix(1000, 0)
	for i, want := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		d, ok := p.next(now.Add(time.Duration(i) * time.Second))
		if !ok || d != want {
			t.Errorf("restart %d: %v, %v; want %v, true", i, d, ok, want)
		}
	}
	if _, ok := p.next(now.Add(3 * time.Second)); ok {
		t.Error("fourth restart within the window allowed")
	}
	if d, ok := p.next(now.Add(2 * time.Minute)); !ok || d != 10*time.Millisecond {
		t.Errorf("restart after the window: %v, %v", d, ok)
	}
}

func startChild(t *testing.T, argv ...string) int {
	t.Helper()
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{})
	if err != nil {
		t.Skipf("cannot start %s: %v", argv[0], err)
	}
	return pid
}

// TestReap runs the reaper in the test process: it collects children, spots
// the server among them, and reapAll stops at its bound while a child lives.
// It waits for any child, so it must not run in parallel with others.
func TestReap(t *testing.T) {
	in := &initProc{}
	in.server = startChild(t, "/bin/true")
	startChild(t, "/bin/true")
	if !reapAll(10 * time.Second) {
		t.Fatal("reapAll did not see every child end")
	}
	in.server = startChild(t, "/bin/true")
	deadline := time.Now().Add(10 * time.Second)
	for !in.reap() {
		if time.Now().After(deadline) {
			t.Fatal("reap never reported the server's end")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if in.server != 0 {
		t.Errorf("server pid %d kept after its end", in.server)
	}

	pid := startChild(t, "/bin/sleep", "30")
	start := time.Now()
	if reapAll(100 * time.Millisecond) {
		t.Error("reapAll reported no children while sleep runs")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("reapAll(100ms) took %v", took)
	}
	unix.Kill(pid, unix.SIGKILL)
	if !reapAll(10 * time.Second) {
		t.Error("reapAll did not reap the killed sleep")
	}
}
