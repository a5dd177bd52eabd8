// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

// hostsFile renders /etc/hosts: loopback names, the host name, then the
// configured extra lines.
func hostsFile(c *bootcfg.Config) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	// 127.0.1.1 for the host's own name, as Debian does, so that it
	// resolves without a network.
	fmt.Fprintf(&b, "127.0.1.1\t%s\n", c.Hostname)
	for _, h := range c.Hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.IP, strings.Join(h.Names, " "))
	}
	return b.String()
}

// resolvConf renders /etc/resolv.conf for n; "" when n sets no DNS, in
// which case the image's file is left alone.
func resolvConf(n *bootcfg.Network) string {
	if n == nil || (len(n.DNS) == 0 && len(n.Search) == 0) {
		return ""
	}
	var b strings.Builder
	for _, d := range n.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if len(n.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(n.Search, " "))
	}
	return b.String()
}

// writeEtc replaces /etc/name in the current root with content. Whatever
// is there (a file, or a symlink such as systemd-resolved's) is replaced by
// a regular file; the write lands in the overlay's upper layer.
func writeEtc(name, content string) error {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	p := filepath.Join("/etc", name)
	tmp := p + ".msb-agent"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// setupGuest runs the steps after the switch into the root: host name,
// /etc files, working directory, configured mounts, network.
func setupGuest(c *bootcfg.Config, m *mounts) error {
	if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
		return fmt.Errorf("sethostname %q: %w", c.Hostname, err)
	}
	if err := writeEtc("hostname", c.Hostname+"\n"); err != nil {
		return fmt.Errorf("write /etc/hostname: %w", err)
	}
	if err := writeEtc("hosts", hostsFile(c)); err != nil {
		return fmt.Errorf("write /etc/hosts: %w", err)
	}
	if rc := resolvConf(c.Network); rc != "" {
		if err := writeEtc("resolv.conf", rc); err != nil {
			return fmt.Errorf("write /etc/resolv.conf: %w", err)
		}
	}
	if err := os.MkdirAll(c.Workdir, 0o755); err != nil {
		return fmt.Errorf("workdir: %w", err)
	}
	if err := m.run(mountsPlan(c)); err != nil {
		return fmt.Errorf("mounts: %w", err)
	}
	if err := setupLoopback(); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if c.Network != nil {
		if err := setupNetwork(c.Network); err != nil {
			return fmt.Errorf("network %s: %w", c.Network.Interface, err)
		}
	}
	if c.User != "" {
		if err := checkUser(c.User); err != nil {
			// Not fatal: execs naming another user still work, and the
			// host sees the spawn error for this one.
			errorf("default user %q: %v", c.User, err)
		}
	}
	return nil
}

// checkUser reports whether the name part of user (name, uid, name:group
// or uid:gid) is a uid or is listed in /etc/passwd.
func checkUser(user string) error {
	name, _, _ := strings.Cut(user, ":")
	if isNumber(name) {
		return nil
	}
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n, _, ok := strings.Cut(sc.Text(), ":"); ok && n == name {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("not in /etc/passwd")
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
