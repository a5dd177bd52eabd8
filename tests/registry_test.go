// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"context"
	"strings"
	"testing"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/oci/ocitest"
)

// TestRegistrySandbox boots a sandbox from an image pulled from a registry
// that needs basic auth over TLS with a self-signed CA, through the SDK's
// registry options; the stored image is then held by the sandbox.
func TestRegistrySandbox(t *testing.T) {
	vmtest.RequireKVM(t)
	layout := strings.TrimSuffix(strings.TrimPrefix(setupRuntime(t), "oci:"), ":busybox")
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()
	reg := ocitest.NewRegistry(t, ocitest.Options{Username: "alice", Password: "s3cret", TLS: true})
	if err := reg.Push(ctx, layout, "busybox", "lib/busybox", "1"); err != nil {
		t.Fatal(err)
	}
	ref := reg.Ref("lib/busybox", "1")

	_, err := microsandbox.CreateSandbox(ctx, "noauth", microsandbox.WithImage(ref), microsandbox.WithMemory(128),
		microsandbox.WithRegistryCACerts(reg.CACert))
	if !microsandbox.IsKind(err, microsandbox.ErrImagePullFailed) || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("CreateSandbox without credentials = %v, want ErrImagePullFailed (unauthorized)", err)
	}
	sb := createSandbox(ctx, t, "fromreg", ref, microsandbox.WithMemory(128),
		microsandbox.WithRegistryAuth(microsandbox.RegistryAuth{Username: "alice", Password: "s3cret"}),
		microsandbox.WithRegistryCACerts(reg.CACert))
	if got := mustExec(ctx, t, sb, "echo", "pulled"); got != "pulled\n" {
		t.Errorf("exec = %q", got)
	}
	d, err := microsandbox.Image.Inspect(ctx, ref)
	if err != nil || len(d.InUseBy) != 1 || d.InUseBy[0] != "fromreg" {
		t.Errorf("Inspect = %+v, %v; want held by fromreg", d, err)
	}
	if err := microsandbox.Image.Remove(ctx, ref, false); !microsandbox.IsKind(err, microsandbox.ErrImageInUse) {
		t.Errorf("Image.Remove of a held image = %v, want ErrImageInUse", err)
	}
	// The password never reaches the sandbox's record.
	h, _ := microsandbox.GetSandbox(ctx, "fromreg")
	if h == nil || strings.Contains(h.ConfigJSON(), "s3cret") {
		t.Errorf("ConfigJSON holds the registry password: %v", h)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := microsandbox.RemoveSandbox(ctx, "fromreg"); err != nil {
		t.Fatal(err)
	}
	if err := microsandbox.Image.Remove(ctx, ref, false); err != nil {
		t.Errorf("Image.Remove after the sandbox is gone = %v", err)
	}
}
