// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/policy"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/netdev"
)

// guestNIC wires a virtio-net device to a user-mode network stack, as the
// sandbox process does: guest frames into the stack, stack frames into the
// guest's rx queue.
func guestNIC(t *testing.T, p *policy.Policy, ports ...netstack.Port) (*netdev.Device, *netstack.Stack) {
	t.Helper()
	var dev *netdev.Device
	stack, err := netstack.New(netstack.Config{
		Policy:      p,
		Ports:       ports,
		WriteFrame:  func(f []byte) { dev.Deliver(f) }, // a full rx queue drops; TCP retransmits
		DNSServers:  []netip.AddrPort{},                // no upstream: only names the stack answers
		DisableIPv6: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	dev, err = netdev.New(netdev.Config{
		MAC:     net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56},
		Backend: netdev.BackendFunc(func(f []byte) error { stack.DeliverFrame(f); return nil }),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := stack.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stack.Close()
		dev.Close()
	})
	return dev, stack
}

func guestNetwork() *bootcfg.Network {
	return &bootcfg.Network{
		Addresses: []string{netip.PrefixFrom(netstack.Guest4, netstack.Subnet4.Bits()).String()},
		Routes:    []bootcfg.Route{{Destination: "default", Gateway: netstack.Gateway4.String()}},
		DNS:       []string{netstack.Gateway4.String()},
	}
}

// TestNetworkPolicy boots guests behind the user-mode network and fetches a
// page from an HTTP server on the host's loopback through the host alias:
// it works under AllowAll only; the public profile refuses it and private
// and metadata addresses; with no network there is no eth0.
func TestNetworkPolicy(t *testing.T) {
	vmtest.RequireKVM(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from the host")
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	// By address: the image's busybox is static glibc, whose getaddrinfo
	// cannot load NSS modules; busybox nslookup checks the name instead.
	hostURL := fmt.Sprintf("http://%s:%d/", netstack.Gateway4, port)
	// Refused flows fail at once (RST); the exec timeout only bounds a bug.
	// No wget -T: Debian's busybox-static 1.35 wget segfaults with it (on
	// the host too).
	wget := func(url string) host.ExecConfig {
		return host.ExecConfig{Argv: []string{"wget", "-q", "-O", "-", url}, Timeout: vmtest.Scale(10 * time.Second)}
	}

	for _, tc := range []struct {
		name   string
		policy *policy.Policy
		checks func(ctx context.Context, t *testing.T, c *host.Client)
	}{
		{"allow-all", policy.AllowAll(), func(ctx context.Context, t *testing.T, c *host.Client) {
			out := run(ctx, t, c, wget(hostURL))
			if string(out.Stdout) != "hello from the host" {
				t.Errorf("wget %s under AllowAll: %q, stderr %q, exit %d", hostURL, out.Stdout, out.Stderr, out.Status.Code)
			}
			out = run(ctx, t, c, host.ExecConfig{Argv: []string{"nslookup", netstack.HostName, netstack.Gateway4.String()}})
			if !strings.Contains(string(out.Stdout), netstack.Gateway4.String()) {
				t.Errorf("nslookup %s: %q, stderr %q", netstack.HostName, out.Stdout, out.Stderr)
			}
		}},
		{"public", policy.Public(), func(ctx context.Context, t *testing.T, c *host.Client) {
			for _, url := range []string{
				hostURL,
				"http://10.1.2.3/", "http://127.0.0.1/", "http://169.254.169.254/latest/meta-data/",
			} {
				out := run(ctx, t, c, wget(url))
				if out.Status.Code == 0 || out.Status.TimedOut || strings.Contains(string(out.Stdout), "hello") {
					t.Errorf("wget %s under the public profile: %q, exit %+v; want a refusal", url, out.Stdout, out.Status)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nic, stack := guestNIC(t, tc.policy)
			v := startAgentVMOn(t, ownRootFile, &bootcfg.Config{Network: guestNetwork()}, nil, virtio.Device(nic))
			ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
			defer cancel()
			c := v.dial(ctx)
			out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "ip addr show eth0 2>&1 || ifconfig eth0"}})
			if !strings.Contains(string(out.Stdout), netstack.Guest4.String()) {
				t.Fatalf("eth0 does not have %s: %q %q\nconsole:\n%s", netstack.Guest4, out.Stdout, out.Stderr, v.console.String())
			}
			tc.checks(ctx, t, c)
			t.Logf("stack counters: %+v", stack.Stats())
			c.Run(ctx, host.ExecConfig{Argv: []string{"kill", "-TERM", "1"}})
			v.wait(vmtest.Scale(30 * time.Second))
		})
	}

	t.Run("none", func(t *testing.T) {
		v := startAgentVMOn(t, ownRootFile, &bootcfg.Config{}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
		defer cancel()
		c := v.dial(ctx)
		out := run(ctx, t, c, host.ExecConfig{Argv: []string{"ls", "/sys/class/net"}})
		if !strings.Contains(string(out.Stdout), "lo") || strings.Contains(string(out.Stdout), "eth") {
			t.Errorf("interfaces with no network: %q, want no eth*", out.Stdout)
		}
		c.Run(ctx, host.ExecConfig{Argv: []string{"kill", "-TERM", "1"}})
		v.wait(vmtest.Scale(30 * time.Second))
	})
}

// TestPublishedPort publishes guest port 8080 on the host's loopback and
// reads what a guest process serves there.
func TestPublishedPort(t *testing.T) {
	vmtest.RequireKVM(t)
	nic, stack := guestNIC(t, policy.Public(), netstack.Port{GuestPort: 8080})
	v := startAgentVMOn(t, ownRootFile, &bootcfg.Config{Network: guestNetwork()}, nil, virtio.Device(nic))
	ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
	defer cancel()
	c := v.dial(ctx)
	p, err := c.Exec(ctx, host.ExecConfig{Argv: []string{"sh", "-c", "echo published from the guest | nc -l -p 8080"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill(context.Background())
	hostAddr := stack.PublishedPorts()[0].HostAddr
	var got []byte
	deadline := time.Now().Add(vmtest.Scale(10 * time.Second))
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", hostAddr.String(), time.Second)
		if err == nil {
			conn.SetDeadline(time.Now().Add(vmtest.Scale(5 * time.Second)))
			got, _ = io.ReadAll(conn)
			conn.Close()
			if len(got) > 0 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond) // nc may not listen yet
	}
	if string(got) != "published from the guest\n" {
		t.Fatalf("read from %v = %q, want the guest's line; stack %+v", hostAddr, got, stack.Stats())
	}
	if err := c.Shutdown(ctx, false); err != nil {
		t.Fatal(err)
	}
	v.wait(vmtest.Scale(30 * time.Second))
}
