// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/internal/vmtest"
)

// pythonOCIFile is the python test image (Debian minbase with
// python3, python-is-python3) as an OCI layout in one tar (tests/mkoci -image python,
// built by make on the host, where debootstrap is).
const pythonOCIFile = "python-oci.tar"

// TestPythonHello is the seed's headline example: a Python sandbox with the
// project's sources bound read-only at /app/src and the public-only
// network, that prints. The image has no /app: the agent creates the
// working directory.
func TestPythonHello(t *testing.T) {
	vmtest.RequireKVM(t)
	setupRuntime(t)
	image := "oci:" + untarLayout(t, requireFile(t, pythonOCIFile)) + ":python"
	ctx, cancel := context.WithTimeout(context.Background(), sandboxTestTimeout)
	defer cancel()

	// The seed binds "./src" relative to the working directory.
	cwd := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cwd, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cwd, "src", "hello.py"), []byte("print('Hello from src!')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(cwd)

	start := time.Now()
	sb, err := microsandbox.CreateSandbox(ctx, "my-sandbox",
		microsandbox.WithImage(image),
		microsandbox.WithMemory(512),
		microsandbox.WithCPUs(2),
		microsandbox.WithEnv(map[string]string{"PYTHONDONTWRITEBYTECODE": "1"}),
		microsandbox.WithWorkdir("/app"),
		microsandbox.WithMounts(map[string]microsandbox.MountConfig{
			"/app/src": microsandbox.Mount.Bind("./src", microsandbox.MountOptions{Readonly: true}),
		}),
		microsandbox.WithNetwork(microsandbox.NetworkPolicy.PublicOnly()))
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

	defer diagnoseIfHung(t, "my-sandbox", time.Duration(vmtest.Slowdown())*4*time.Second)()
	start = time.Now()
	out, err := sb.Exec(ctx, "python", []string{"-c", "print('Hello!')"})
	if err != nil {
		t.Fatalf("Exec(python): %v", err)
	}
	t.Logf("python -c print took %v", time.Since(start).Round(time.Millisecond))
	if out.Stdout() != "Hello!\n" || out.ExitCode() != 0 {
		t.Fatalf("python -c \"print('Hello!')\" = %q (stderr %q), exit %d; want \"Hello!\\n\", 0", out.Stdout(), out.Stderr(), out.ExitCode())
	}
	if out, err := sb.Exec(ctx, "python3", []string{"src/hello.py"}); err != nil || out.Stdout() != "Hello from src!\n" {
		t.Errorf("python3 src/hello.py = %v, %v", out, err)
	}
	out, err = sb.Exec(ctx, "python3", []string{"-c", "open('/app/src/new.py', 'w')"})
	if err != nil || out.Success() || !strings.Contains(out.Stderr(), "Read-only file system") {
		t.Errorf("a write into the read-only /app/src: %v, %+v; want EROFS", err, out)
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
