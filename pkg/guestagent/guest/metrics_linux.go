// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// metrics samples the guest: memory from /proc/meminfo, load from
// /proc/loadavg, uptime from /proc/uptime, the process count from /proc's
// numeric entries and disk usage of the requested path from statfs.
func (c *conn) metrics(req *agentpb.MetricsRequest) (*agentpb.Frame, error) {
	path := req.GetDiskPath()
	if path == "" {
		path = "/"
	}
	if err := checkPath(path); err != nil {
		return nil, err
	}
	m := &agentpb.Metrics{DiskPath: path}
	if err := readMeminfo(m); err != nil {
		return nil, err
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return nil, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := uint64(sfs.Bsize)
	m.DiskTotalBytes, m.DiskFreeBytes, m.DiskAvailableBytes = sfs.Blocks*bs, sfs.Bfree*bs, sfs.Bavail*bs
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.Load1, _ = strconv.ParseFloat(f[0], 64)
			m.Load5, _ = strconv.ParseFloat(f[1], 64)
			m.Load15, _ = strconv.ParseFloat(f[2], 64)
		}
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if up, err := strconv.ParseFloat(f[0], 64); err == nil {
				m.UptimeMs = uint64(up * 1000)
			}
		}
	}
	if d, err := os.Open("/proc"); err == nil {
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, n := range names {
			if _, err := strconv.ParseUint(n, 10, 32); err == nil {
				m.Processes++
			}
		}
	}
	return &agentpb.Frame{Msg: &agentpb.Frame_Metrics{Metrics: m}}, nil
}

func readMeminfo(m *agentpb.Metrics) error {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		switch k {
		case "MemTotal":
			m.MemoryTotalBytes = n
		case "MemAvailable":
			m.MemoryAvailableBytes = n
		}
	}
	return sc.Err()
}
