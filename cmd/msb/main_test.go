// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os"
	"path/filepath"
	"testing"

	microsandbox "github.com/microsandbox-go/microsandbox"
)

func TestParsePort(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want microsandbox.PortBinding
	}{
		{"8080:80", microsandbox.PortBinding{HostPort: 8080, GuestPort: 80, Protocol: "tcp"}},
		{"0.0.0.0:53:53/udp", microsandbox.PortBinding{Bind: "0.0.0.0", HostPort: 53, GuestPort: 53, Protocol: "udp"}},
	} {
		got, err := parsePort(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parsePort(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"80", "a:b", "1:0", "1:2/sctp", "1:2:3:4", "70000:1"} {
		if _, err := parsePort(bad); err == nil {
			t.Errorf("parsePort(%q) succeeded", bad)
		}
	}
}

func TestParseMiB(t *testing.T) {
	for in, want := range map[string]uint32{"512": 512, "512M": 512, "1G": 1024, "2GiB": 2048, "256MiB": 256} {
		if got, err := parseMiB(in); err != nil || got != want {
			t.Errorf("parseMiB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "x", "2T", "-1"} {
		if _, err := parseMiB(bad); err == nil {
			t.Errorf("parseMiB(%q) succeeded", bad)
		}
	}
}

// TestVolumeAndListCommands drives the commands that need no VM against a
// fresh MSB_HOME.
func TestVolumeAndListCommands(t *testing.T) {
	home := t.TempDir()
	t.Setenv("MSB_HOME", home)
	if code := run([]string{"volume", "create", "--quota", "5", "v1"}); code != 0 {
		t.Fatalf("volume create: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(home, "volumes", "v1", "data")); err != nil {
		t.Errorf("volume directory: %v", err)
	}
	if code := run([]string{"volume", "create", "v1"}); code != 1 {
		t.Errorf("volume create of an existing name: exit %d, want 1", code)
	}
	for _, args := range [][]string{{"volume", "ls"}, {"ls"}, {"ps", "--json"}, {"images"}, {"version"}} {
		if code := run(args); code != 0 {
			t.Errorf("msb %v: exit %d", args, code)
		}
	}
	if code := run([]string{"volume", "rm", "v1"}); code != 0 {
		t.Errorf("volume rm: exit %d", code)
	}
	if code := run([]string{"stop", "nope"}); code != 1 {
		t.Errorf("stop of a missing sandbox: exit %d, want 1", code)
	}
	if code := run([]string{"frobnicate"}); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

func TestParseVolume(t *testing.T) {
	for _, c := range []struct {
		in, guest string
		ok        bool
	}{
		{"./src:/app/src:ro", "/app/src", true},
		{"/tmp:/share", "/share", true},
		{"cache:/cache:rw", "/cache", true},
		{"nocolon", "", false},
		{"/tmp:relative", "", false},
		{":/x", "", false},
		{"/a:/b:maybe", "", false},
	} {
		guest, _, err := parseVolume(c.in)
		if (err == nil) != c.ok || guest != c.guest {
			t.Errorf("parseVolume(%q) = %q, %v; want %q, ok %v", c.in, guest, err, c.guest, c.ok)
		}
	}
}
