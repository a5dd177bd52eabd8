// SPDX-License-Identifier: Apache-2.0

//go:build e2e

package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/vmtest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/blk"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/rng"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
	"github.com/microsandbox-go/microsandbox/tests/guestproto"
)

// TestBlk gives the guest a read-write disk with host data to hash and a
// region to write, and a read-only disk it must fail to write.
func TestBlk(t *testing.T) {
	vmtest.RequireKVM(t)
	dir := t.TempDir()
	rwPath, roPath := filepath.Join(dir, "rw.img"), filepath.Join(dir, "ro.img")
	data := make([]byte, guestproto.BlkDataBytes)
	io.ReadFull(guestproto.Stream(42), data)
	disk := append(bytes.Clone(data), make([]byte, guestproto.BlkWriteBytes)...)
	if err := os.WriteFile(rwPath, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	roData := bytes.Repeat([]byte("read-only "), 1<<16)
	if err := os.WriteFile(roPath, roData, 0o644); err != nil {
		t.Fatal(err)
	}
	rw, err := blk.New(blk.Config{Path: rwPath, ID: "rw"})
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	ro, err := blk.New(blk.Config{Path: roPath, ReadOnly: true, ID: "ro"})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()

	exit, console := bootGuest(t, vmm.Config{Devices: []virtio.Device{rw, ro}, Cmdline: "msb_checks=blk"})
	if _, ok := console.value("done"); !ok || exit.Reason != vmm.ExitReset {
		t.Fatalf("exit = %v; console:\n%s", exit, console.String())
	}
	if e, ok := console.value("blk_error"); ok {
		t.Fatalf("guest: %s", e)
	}
	sum := sha256.Sum256(data)
	if got, _ := console.value("blk_read_sha256"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("guest read sha256 %s, want %x", got, sum)
	}
	after, err := os.ReadFile(rwPath)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, guestproto.BlkWriteBytes)
	io.ReadFull(guestproto.Stream(guestproto.BlkWriteStream), want)
	if !bytes.Equal(after[guestproto.BlkWriteOffset:], want) {
		t.Error("the region the guest wrote does not hold its stream")
	}
	if !bytes.Equal(after[:guestproto.BlkDataBytes], data) {
		t.Error("the guest's write changed the host data before it")
	}
	if got, _ := console.value("blk_ro_write"); got == "ok" || got == "" {
		t.Errorf("write to the read-only disk: %q, want an error", got)
	}
	if now, _ := os.ReadFile(roPath); !bytes.Equal(now, roData) {
		t.Error("the read-only disk's file changed")
	}
}

// TestRNG reads the entropy device twice from the guest.
func TestRNG(t *testing.T) {
	vmtest.RequireKVM(t)
	exit, console := bootGuest(t, vmm.Config{Devices: []virtio.Device{rng.New()}, Cmdline: "msb_checks=rng"})
	a, _ := console.value("rng_0")
	b, _ := console.value("rng_1")
	if len(a) != 64 || len(b) != 64 || a == b || a == strings.Repeat("0", 64) {
		t.Fatalf("guest entropy reads %q and %q, want two different 32-byte values; exit %v\n%s", a, b, exit, console.String())
	}
}

// TestVsock moves 64 MiB each way over 8 concurrent connections in each
// direction (guest dials host, host dials guest), every byte checked.
func TestVsock(t *testing.T) {
	vmtest.RequireKVM(t)
	const totalMiB = 64
	each := int64(totalMiB) << 20 / guestproto.VsockConnections
	dev, err := vsock.New(vsock.Config{GuestCID: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ln, err := dev.Listen(guestproto.VsockHostPort)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), vmtest.Scale(60*time.Second))
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	for range guestproto.VsockConnections {
		wg.Go(func() {
			c, err := ln.Accept()
			if err != nil {
				fail(fmt.Errorf("accept: %w", err))
				return
			}
			defer c.Close()
			fail(guestproto.Acceptor(c, each))
		})
	}
	console := &consoleLog{t: t}
	// Dial the guest once it listens.
	wg.Go(func() {
		for {
			if _, ok := console.value("vsock_listening"); ok {
				break
			}
			select {
			case <-ctx.Done():
				fail(errors.New("the guest never listened"))
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		var inner sync.WaitGroup
		for i := range guestproto.VsockConnections {
			inner.Go(func() {
				c, err := dev.Dial(ctx, guestproto.VsockGuestPort)
				if err != nil {
					fail(fmt.Errorf("dial guest: %w", err))
					return
				}
				defer c.Close()
				fail(guestproto.Dialer(c, uint32(i), each))
			})
		}
		inner.Wait()
	})

	start := time.Now()
	// Nested, the transfer takes 10-30 s; a stall is reported with the
	// device's counters and the host's goroutines, then the machine stops.
	exit, _ := bootGuestWith(t, vmm.Config{
		Devices: []virtio.Device{dev},
		Cmdline: fmt.Sprintf("msb_checks=vsock msb_vsock_mib=%d", totalMiB),
	}, console, vmtest.Scale(10*time.Second), func() {
		t.Errorf("vsock transfer stalled; device metrics: %s\nconsole:\n%s", metricsString(dev.Metrics()), console.String())
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
	})
	took := time.Since(start)
	ln.Close()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("host side: %v", err)
	}
	if e, ok := console.value("vsock_error"); ok {
		t.Errorf("guest side: %s", e)
	}
	if got, _ := console.value("vsock_ok"); got != fmt.Sprint(2*guestproto.VsockConnections) {
		t.Fatalf("guest reported %q transfers ok, want %d; exit %v\n%s", got, 2*guestproto.VsockConnections, exit, console.String())
	}
	t.Logf("%d MiB each way over %d+%d connections in %v (boot included)", totalMiB, guestproto.VsockConnections, guestproto.VsockConnections, took.Round(time.Millisecond))
}

// metricsString prints a struct of atomic counters as name=value pairs.
func metricsString(m any) string {
	v := reflect.ValueOf(m).Elem()
	var b strings.Builder
	for i := range v.NumField() {
		f := v.Field(i)
		if load := f.Addr().MethodByName("Load"); load.IsValid() {
			fmt.Fprintf(&b, "%s=%v ", v.Type().Field(i).Name, load.Call(nil)[0])
		}
	}
	return b.String()
}
