// SPDX-License-Identifier: Apache-2.0

package microsandbox_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
)

// The headline example: a Python sandbox that runs one command. Examples
// without an Output comment are compiled, not run: they need KVM.
func Example() {
	ctx := context.Background()
	sb, err := microsandbox.CreateSandbox(ctx, "my-sandbox",
		microsandbox.WithImage("python"),
		microsandbox.WithMemory(512),
		microsandbox.WithCPUs(2),
		microsandbox.WithEnv(map[string]string{"PYTHONDONTWRITEBYTECODE": "1"}),
		microsandbox.WithWorkdir("/app"),
		microsandbox.WithNetwork(microsandbox.NetworkPolicy.PublicOnly()))
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Stop(ctx)
	out, err := sb.Exec(ctx, "python", []string{"-c", "print('Hello!')"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(out.Stdout())
}

// Streaming a command's output as it arrives, with a range-over-func
// iterator.
func ExampleSandbox_ExecStream() {
	ctx := context.Background()
	sb, err := microsandbox.CreateSandbox(ctx, "stream", microsandbox.WithImage("busybox"))
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Stop(ctx)
	h, err := sb.ShellStream(ctx, "for i in 1 2 3; do echo $i; sleep 1; done")
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	for ev, err := range h.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Kind {
		case microsandbox.ExecEventStdout:
			os.Stdout.Write(ev.Data)
		case microsandbox.ExecEventExited:
			fmt.Println("exit code", ev.ExitCode)
		}
	}
}

// Files in and out of the guest.
func ExampleSandboxFSOps() {
	ctx := context.Background()
	sb, err := microsandbox.CreateSandbox(ctx, "files", microsandbox.WithImage("busybox"))
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Stop(ctx)
	if err := sb.FS().WriteString(ctx, "/app/input.txt", "data"); err != nil {
		log.Fatal(err)
	}
	if _, err := sb.Shell(ctx, "wc -c /app/input.txt > /app/count"); err != nil {
		log.Fatal(err)
	}
	count, err := sb.FS().ReadString(ctx, "/app/count")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(count)
}

// A detached sandbox outlives its creator; later processes find it by
// name.
func ExampleGetSandbox() {
	ctx := context.Background()
	sb, err := microsandbox.CreateSandbox(ctx, "worker", microsandbox.WithImage("busybox"), microsandbox.WithDetached())
	if err != nil {
		log.Fatal(err)
	}
	sb.Detach(ctx)

	h, err := microsandbox.GetSandbox(ctx, "worker")
	if err != nil {
		log.Fatal(err)
	}
	conn, err := h.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	m, err := conn.Metrics(ctx)
	if err == nil {
		fmt.Println(m.MemoryLimitBytes, m.Uptime)
	}
	h.Stop(ctx, microsandbox.WithStopTimeout(5*time.Second))
}
