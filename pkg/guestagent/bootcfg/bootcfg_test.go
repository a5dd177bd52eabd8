// SPDX-License-Identifier: Apache-2.0

package bootcfg_test

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
)

func TestParseDefaults(t *testing.T) {
	c, err := bootcfg.Parse([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &bootcfg.Config{
		Version:     bootcfg.Version,
		Hostname:    bootcfg.DefaultHostname,
		Workdir:     "/",
		Root:        bootcfg.Root{Device: "/dev/vda", FSType: "erofs", Upper: bootcfg.Upper{Size: "50%"}},
		TmpSize:     "50%",
		StopGraceMS: bootcfg.DefaultStopGraceMS,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse({}) = %+v, want %+v", c, want)
	}
	c, err = bootcfg.Parse([]byte(`{"root":{"upper":{"device":"/dev/vdb"}},"network":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Root.Upper.Size != "" || c.Network.Interface != "eth0" {
		t.Errorf("disk upper and network defaults: %+v %+v", c.Root.Upper, c.Network)
	}
}

func TestParseFull(t *testing.T) {
	in := `{
  "version": 1,
  "hostname": "box-1.example",
  "env": ["PATH=/usr/bin:/bin", "EMPTY="],
  "user": "app:staff",
  "workdir": "/srv/app",
  "root": {"device": "/dev/vda", "fstype": "ext4", "upper": {"size": "512m"}},
  "mounts": [
    {"source": "/dev/vdc", "target": "/data", "fstype": "ext4", "options": ["noatime", "nosuid"]},
    {"target": "/scratch", "fstype": "tmpfs", "options": ["size=16m"]}
  ],
  "hosts": [{"ip": "fd00::1", "names": ["gw"]}],
  "network": {
    "interface": "eth0", "addresses": ["10.0.2.15/24", "fd00::2/64"], "mtu": 1500,
    "routes": [{"destination": "default", "gateway": "10.0.2.2"}, {"destination": "192.168.0.0/16"}],
    "dns": ["10.0.2.3"], "search": ["example"]
  },
  "tmp_size": "25%",
  "stop_grace_ms": 500
}`
	c, err := bootcfg.Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if c.Root.FSType != "ext4" || len(c.Mounts) != 2 || c.Network.MTU != 1500 || c.StopGraceMS != 500 || c.User != "app:staff" {
		t.Errorf("Parse lost fields: %+v", c)
	}
	// Marshal and Parse round-trip.
	b, err := bootcfg.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := bootcfg.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Errorf("round trip: %+v, want %+v", c2, c)
	}
}

func TestParseInvalid(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
	}{
		{"not json", `{`, "unexpected EOF"},
		{"unknown field", `{"secrets": {"k": "v"}}`, `unknown field "secrets"`},
		{"trailing", `{} {}`, "trailing data"},
		{"version", `{"version": 2}`, "version 2"},
		{"hostname", `{"hostname": "-bad"}`, "hostname"},
		{"long hostname", `{"hostname": "` + strings.Repeat("a", 65) + `"}`, "hostname"},
		{"env", `{"env": ["NOEQUALS"]}`, "env[0]"},
		{"env empty key", `{"env": ["=x"]}`, "env[0]"},
		{"user", `{"user": "a:b:c"}`, "user"},
		{"workdir", `{"workdir": "relative"}`, "workdir"},
		{"workdir unclean", `{"workdir": "/a/../b"}`, "workdir"},
		{"root device", `{"root": {"device": "/etc/passwd"}}`, "root.device"},
		{"root fstype", `{"root": {"fstype": "xfs"}}`, "root.fstype"},
		{"upper same device", `{"root": {"upper": {"device": "/dev/vda"}}}`, "root image's device"},
		{"upper size with device", `{"root": {"upper": {"device": "/dev/vdb", "size": "1g"}}}`, "root.upper.size"},
		{"upper size", `{"root": {"upper": {"size": "lots"}}}`, "root.upper.size"},
		{"upper percent", `{"root": {"upper": {"size": "101%"}}}`, "root.upper.size"},
		{"tmp size", `{"tmp_size": "1mm"}`, "tmp_size"},
		{"grace", `{"stop_grace_ms": -1}`, "stop_grace_ms"},
		{"mount target", `{"mounts": [{"source": "/dev/vdc", "target": "/", "fstype": "ext4"}]}`, "mounts[0]: target"},
		{"mount in proc", `{"mounts": [{"source": "/dev/vdc", "target": "/proc/x", "fstype": "ext4"}]}`, "system mount /proc"},
		{"mount fstype", `{"mounts": [{"source": "/dev/vdc", "target": "/d", "fstype": "nfs"}]}`, "fstype"},
		{"mount source", `{"mounts": [{"target": "/d", "fstype": "ext4"}]}`, "source"},
		{"mount option", `{"mounts": [{"source": "/dev/vdc", "target": "/d", "fstype": "ext4", "options": ["a,b"]}]}`, "option"},
		{"hosts ip", `{"hosts": [{"ip": "x", "names": ["a"]}]}`, "hosts[0].ip"},
		{"hosts names", `{"hosts": [{"ip": "1.2.3.4", "names": []}]}`, "no names"},
		{"interface", `{"network": {"interface": "eth0/x"}}`, "interface"},
		{"address", `{"network": {"addresses": ["10.0.2.15"]}}`, "address"},
		{"mtu", `{"network": {"mtu": 20}}`, "mtu"},
		{"dns", `{"network": {"dns": ["dns.example"]}}`, "dns"},
		{"search", `{"network": {"search": ["a b"]}}`, "search"},
		{"default without gateway", `{"network": {"routes": [{"destination": "default"}]}}`, "without a gateway"},
		{"route family", `{"network": {"routes": [{"destination": "10.0.0.0/8", "gateway": "fd00::1"}]}}`, "family"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := bootcfg.Parse([]byte(c.in))
			if err == nil || !errors.Is(err, bootcfg.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Parse(%s) = %v, want an ErrInvalid mentioning %q", c.in, err, c.want)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := &bootcfg.Config{Hostname: "-x", Workdir: "x", Root: bootcfg.Root{FSType: "xfs"}}
	err := c.Validate()
	for _, want := range []string{"hostname", "workdir", "root.fstype"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %s", err, want)
		}
	}
	if _, err := bootcfg.Marshal(c); !errors.Is(err, bootcfg.ErrInvalid) {
		t.Errorf("Marshal(invalid) = %v, want ErrInvalid", err)
	}
}

func TestRouteDestination(t *testing.T) {
	for _, c := range []struct {
		r    bootcfg.Route
		want string
	}{
		{bootcfg.Route{Destination: "default", Gateway: "10.0.2.2"}, "0.0.0.0/0"},
		{bootcfg.Route{Destination: "default", Gateway: "fd00::1"}, "::/0"},
		{bootcfg.Route{Destination: "10.1.2.3/8"}, "10.0.0.0/8"},
		{bootcfg.Route{Destination: "fd00::/64", Gateway: "fd00::1"}, "fd00::/64"},
	} {
		got, err := bootcfg.RouteDestination(c.r)
		if err != nil || got != netip.MustParsePrefix(c.want) {
			t.Errorf("RouteDestination(%+v) = %v, %v; want %s", c.r, got, err, c.want)
		}
	}
}

func TestWriteInitramfs(t *testing.T) {
	var buf bytes.Buffer
	agent := []byte("\x7fELF agent")
	cfg := &bootcfg.Config{Hostname: "h"}
	if err := bootcfg.WriteInitramfs(&buf, bytes.NewReader(agent), int64(len(agent)), cfg); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"dev/console", "msb/boot.json", `"hostname": "h"`, "init\x00", string(agent), "TRAILER!!!"} {
		if !strings.Contains(out, want) {
			t.Errorf("initramfs lacks %q", want)
		}
	}
	if err := bootcfg.WriteInitramfs(&buf, bytes.NewReader(agent), int64(len(agent)), &bootcfg.Config{Hostname: "-"}); !errors.Is(err, bootcfg.ErrInvalid) {
		t.Errorf("WriteInitramfs(invalid config) = %v, want ErrInvalid", err)
	}
}

func TestStatusString(t *testing.T) {
	if got := bootcfg.StatusRootFailed.String(); got != "root filesystem assembly failed" {
		t.Errorf("StatusRootFailed.String() = %q", got)
	}
	if got := bootcfg.StatusPatchFailed.String(); got != "root filesystem patch failed" {
		t.Errorf("StatusPatchFailed.String() = %q", got)
	}
	if got := bootcfg.Status(200).String(); got != "status 200" {
		t.Errorf("Status(200).String() = %q", got)
	}
}
