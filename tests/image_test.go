// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
	"github.com/microsandbox-go/microsandbox/pkg/vmm"
)

// ownRootFile is the busybox test image pulled with pkg/oci and converted by
// pkg/rootfs's EROFS writer (tests/mkrootfs, built by make e2e).
const ownRootFile = "busybox-rootfs.erofs"

// TestImageRootfsBoots boots the agent on a root filesystem our own image
// path produced and runs the image's programs: the guest kernel must mount
// our EROFS, and ownership, modes and links must be what the image says.
func TestImageRootfsBoots(t *testing.T) {
	vmtest.RequireKVM(t)
	v := startAgentVMOn(t, ownRootFile, &bootcfg.Config{Hostname: "img"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
	defer cancel()
	c := v.dial(ctx)
	for _, tc := range []struct {
		argv []string
		user string
		want string
	}{
		{[]string{"echo", "Hello!"}, "", "Hello!\n"},
		{[]string{"sh", "-c", "id -u; whoami"}, "nobody", "65534\nnobody\n"},
		{[]string{"sh", "-c", "grep -c . /etc/passwd >/dev/null && stat -c '%U %a' /etc/passwd"}, "", "root 644\n"},
		{[]string{"sh", "-c", "echo data | sha256sum"}, "", "6667b2d1aab6a00caa5aee5af8ad9f1465e567abf1c209d15727d57b3e8f6e5f  -\n"},
		{[]string{"sh", "-c", "readlink /bin/sh"}, "", ""},
	} {
		out := run(ctx, t, c, host.ExecConfig{Argv: tc.argv, User: tc.user})
		if tc.want != "" && string(out.Stdout) != tc.want {
			t.Errorf("%q as %q: stdout %q (stderr %q, exit %d), want %q", tc.argv, tc.user, out.Stdout, out.Stderr, out.Status.Code, tc.want)
		}
		if out.Status.Code != 0 {
			t.Errorf("%q: exit %d, stderr %q", tc.argv, out.Status.Code, out.Stderr)
		}
	}
	// The lower is read-only; writes land in the upper.
	out := run(ctx, t, c, host.ExecConfig{Argv: []string{"sh", "-c", "echo x > /bin/new && cat /bin/new && grep ' / ' /proc/mounts"}})
	if !strings.HasPrefix(string(out.Stdout), "x\n") || !strings.Contains(string(out.Stdout), "overlay") {
		t.Errorf("write to /bin: %q %q", out.Stdout, out.Stderr)
	}
	if err := c.Shutdown(ctx, false); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if exit := v.wait(vmtest.Scale(30 * time.Second)); exit.Reason != vmm.ExitPowerOff || exit.Status != 0 {
		t.Errorf("exit = %v, want power-off 0; console:\n%s", exit, v.console.String())
	}
}
