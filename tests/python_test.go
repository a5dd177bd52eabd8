// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"context"
	"testing"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
)

// pythonOCIFile is the python test image (Debian minbase with
// python3-minimal) as an OCI layout in one tar (tests/mkoci -image python,
// built by make on the host, where debootstrap is).
const pythonOCIFile = "python-oci.tar"

// TestPythonHello is the headline example: a Python sandbox that prints.
// The image has no /app: the agent creates the working directory.
func TestPythonHello(t *testing.T) {
	vmtest.RequireKVM(t)
	setupRuntime(t)
	image := "oci:" + untarLayout(t, requireFile(t, pythonOCIFile)) + ":python"
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()

	start := time.Now()
	sb, err := microsandbox.CreateSandbox(ctx, "my-sandbox",
		microsandbox.WithImage(image),
		microsandbox.WithMemory(512),
		microsandbox.WithCPUs(2),
		microsandbox.WithEnv(map[string]string{"PYTHONDONTWRITEBYTECODE": "1"}),
		microsandbox.WithWorkdir("/app"))
	if err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	t.Logf("create took %v (image pull and conversion included)", time.Since(start).Round(time.Millisecond))
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			sb.Stop(context.Background())
		}
	})

	start = time.Now()
	out, err := sb.Exec(ctx, "python3", []string{"-c", "print('Hello!')"})
	if err != nil {
		t.Fatalf("Exec(python3): %v", err)
	}
	t.Logf("python3 -c print took %v", time.Since(start).Round(time.Millisecond))
	if out.Stdout() != "Hello!\n" || out.ExitCode() != 0 {
		t.Fatalf("python3 -c \"print('Hello!')\" = %q (stderr %q), exit %d; want \"Hello!\\n\", 0", out.Stdout(), out.Stderr(), out.ExitCode())
	}

	// The sandbox's environment and working directory reach Python, and
	// PYTHONDONTWRITEBYTECODE keeps it from writing caches.
	out, err = sb.Exec(ctx, "python3", []string{"-c", "import os, sys; print(os.getcwd(), os.environ['PYTHONDONTWRITEBYTECODE'], sys.dont_write_bytecode)"})
	if err != nil {
		t.Fatalf("Exec(python3 env): %v", err)
	}
	if out.Stdout() != "/app 1 True\n" {
		t.Errorf("python3 cwd/env = %q (stderr %q), want \"/app 1 True\\n\"", out.Stdout(), out.Stderr())
	}

	if err := sb.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped = true
}
