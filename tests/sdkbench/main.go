// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command sdkbench measures the SDK's latencies where a KVM is (make bench
// runs it inside the test harness): create → first exec done (p50 and p90
// over -creates runs), and the round trip of exec "true" on a running
// sandbox (p50 over -execs), printed beside a raw vsock echo round trip
// through the same sandbox's socket measured in the same run, so the ratio
// says what the agent protocol, fork and exec in the guest add to the
// transport. Then the file system benchmark (fs.go): a virtio-fs share
// against the guest's own root disk, metadata and bulk, in one sandbox.
// -creates 0 -execs 0 runs the file system benchmark alone.
//
// It expects vmlinux, msb-agent, msb, vsockecho and busybox-oci.tar in its
// working directory (vmtest -file places them).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

const echoPort = 5000

// memMiB is the memory of the create and exec benchmarks' sandboxes.
var memMiB *int

func main() {
	creates := flag.Int("creates", 10, "create → first exec runs")
	execs := flag.Int("execs", 200, "exec round trips")
	fsFiles := flag.Int("fs-files", 10000, "files for the file system benchmark's find+stat (0: skip the file system benchmark)")
	fsCreate := flag.Int("fs-create", 1000, "files the guest creates in the file system benchmark")
	fsMiB := flag.Int("fs-mib", 1024, "MiB written and read sequentially by the file system benchmark")
	memMiB = flag.Int("mem", 128, "memory in MiB of the create and exec benchmarks' sandboxes")
	flag.Parse()
	// One MSB_HOME for the whole run: the SDK reads it once.
	_, cleanup, err := setup()
	if err == nil {
		if *creates > 0 || *execs > 0 {
			err = run(max(*creates, 1), max(*execs, 1))
		}
		if err == nil && *fsFiles > 0 {
			err = runFS(*fsFiles, *fsCreate, *fsMiB)
		}
		cleanup()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sdkbench: %v\n", err)
		os.Exit(1)
	}
}

// setup points the SDK at the run directory's files and a fresh MSB_HOME,
// which the returned function removes.
func setup() (string, func(), error) {
	home, err := os.MkdirTemp("", "sdkbench-")
	if err != nil {
		return "", nil, err
	}
	for k, v := range map[string]string{
		"MSB_HOME": home, "MSB_KERNEL": "vmlinux", "MSB_AGENT": "msb-agent", "MSB_BIN": "msb",
	} {
		os.Setenv(k, v)
	}
	return home, func() { os.RemoveAll(home) }, nil
}

func run(creates, execs int) error {
	image := "oci-archive:busybox-oci.tar:busybox"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	// Create → first exec, each in a fresh sandbox (the image is converted
	// by the first create; it is not timed).
	warm, err := microsandbox.CreateSandbox(ctx, "warm", microsandbox.WithImage(image), microsandbox.WithMemory(uint32(*memMiB)))
	if err != nil {
		return err
	}
	warm.Stop(ctx)
	var createTimes []time.Duration
	for i := range creates {
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		sb, err := microsandbox.CreateSandbox(ctx, name, microsandbox.WithImage(image), microsandbox.WithMemory(uint32(*memMiB)))
		if err != nil {
			return err
		}
		if _, err := sb.Exec(ctx, "true", nil); err != nil {
			return err
		}
		createTimes = append(createTimes, time.Since(start))
		if err := errors.Join(sb.Stop(ctx), microsandbox.RemoveSandbox(ctx, name)); err != nil {
			return err
		}
	}

	sb, err := microsandbox.CreateSandbox(ctx, "rtt", microsandbox.WithImage(image), microsandbox.WithMemory(uint32(*memMiB)))
	if err != nil {
		return err
	}
	defer sb.Stop(context.Background())
	echo, err := os.ReadFile("vsockecho")
	if err != nil {
		return err
	}
	if err := sb.FS().Write(ctx, "/usr/local/bin/vsockecho", echo); err != nil {
		return err
	}
	if _, err := sb.Exec(ctx, "chmod", []string{"755", "/usr/local/bin/vsockecho"}); err != nil {
		return err
	}
	h, err := sb.ExecStream(ctx, "/usr/local/bin/vsockecho", []string{fmt.Sprintf("-port=%d", echoPort)})
	if err != nil {
		return err
	}
	defer h.Kill(context.Background())
	for { // wait for "listening"
		ev, err := h.Recv(ctx)
		if err != nil {
			return err
		}
		if ev.Kind == microsandbox.ExecEventStdout {
			break
		}
		if ev.Kind == microsandbox.ExecEventExited || ev.Kind == microsandbox.ExecEventDone || ev.Kind == microsandbox.ExecEventFailed {
			return fmt.Errorf("vsockecho ended: %+v", ev)
		}
	}

	var execTimes []time.Duration
	for range execs {
		start := time.Now()
		out, err := sb.Exec(ctx, "true", nil)
		if err != nil || !out.Success() {
			return fmt.Errorf("exec true: %v", err)
		}
		execTimes = append(execTimes, time.Since(start))
	}
	sock := sandbox.SocketPath(filepath.Join(os.Getenv("MSB_HOME"), "sandboxes", "rtt"))
	echoTimes, err := echoRTT(sock, execs)
	if err != nil {
		return err
	}

	p := func(d []time.Duration, q float64) time.Duration {
		slices.Sort(d)
		return d[int(q*float64(len(d)-1))]
	}
	fmt.Printf("sdkbench: create → first exec: p50 %v p90 %v (%d runs)\n", p(createTimes, 0.5).Round(time.Millisecond), p(createTimes, 0.9).Round(time.Millisecond), creates)
	execP50, echoP50 := p(execTimes, 0.5), p(echoTimes, 0.5)
	fmt.Printf("sdkbench: exec true round trip p50 %v; raw vsock echo round trip p50 %v; ratio exec/echo %.1f (%d each)\n",
		execP50.Round(time.Microsecond), echoP50.Round(time.Microsecond), float64(execP50)/float64(echoP50), execs)
	return nil
}

// echoRTT times n one-byte round trips to the guest's echo server through
// the sandbox socket's hybrid vsock protocol.
func echoRTT(sock string, n int) ([]time.Duration, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(c, "CONNECT %d\n", echoPort)
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK ") {
		return nil, fmt.Errorf("CONNECT %d: %q, %v", echoPort, line, err)
	}
	var out []time.Duration
	b := []byte{'x'}
	for range n {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		if _, err := r.ReadByte(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
