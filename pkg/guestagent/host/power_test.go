// SPDX-License-Identifier: Apache-2.0

package host_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/guest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

func TestShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, reboot := range []bool{false, true} {
		calls := make(chan bool, 2)
		e := start(t, guest.Config{Power: func(r bool) error { calls <- r; return nil }}, host.Config{})
		if err := e.client.Shutdown(ctx, reboot); err != nil {
			t.Fatalf("Shutdown(reboot=%v) = %v", reboot, err)
		}
		select {
		case got := <-calls:
			if got != reboot {
				t.Errorf("Power called with reboot=%v, want %v", got, reboot)
			}
		default:
			t.Fatalf("Shutdown(reboot=%v) returned before Power was called", reboot)
		}
	}

	e := start(t, guest.Config{}, host.Config{})
	if err := e.client.Shutdown(ctx, false); !errors.Is(err, guestagent.ErrUnavailable) {
		t.Errorf("Shutdown with no Power hook = %v, want ErrUnavailable", err)
	}
	e = start(t, guest.Config{Power: func(bool) error { return errors.New("boom") }, Capabilities: []string{guestagent.CapExec}}, host.Config{})
	if err := e.client.Shutdown(ctx, false); err == nil {
		t.Error("Shutdown without the power capability: got nil error")
	}
}

// TestShutdownMachineEndsFirst: the machine may end (and the connection
// with it) before the agent's acceptance crosses; Shutdown reads that as
// accepted.
func TestShutdownMachineEndsFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b := socketPair(t)
	srv, err := guest.New(guest.Config{Power: func(bool) error { return b.Close() }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(ctx, b)
	}()
	c, err := host.Dial(ctx, a, host.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Shutdown(ctx, false); err != nil {
		t.Errorf("Shutdown with the connection ending at power-off = %v, want nil", err)
	}
	cancel()
	<-done
}

// TestDrain: a drain refuses new execs and powers off when the last running
// one ends, not before.
func TestDrain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	powered := make(chan bool, 2)
	e := start(t, guest.Config{Power: func(r bool) error { powered <- r; return nil }}, host.Config{})
	p, err := e.client.Exec(ctx, host.ExecConfig{Argv: []string{"sh", "-c", "read line; exit 0"}, Stdin: host.StdinPipe})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, err := e.client.Run(ctx, host.ExecConfig{Argv: []string{"true"}}); !errors.Is(err, guestagent.ErrUnavailable) {
		t.Errorf("exec while draining = %v, want ErrUnavailable", err)
	}
	select {
	case <-powered:
		t.Fatal("powered off while an exec still ran")
	case <-time.After(100 * time.Millisecond):
	}
	p.WriteStdin(ctx, []byte("go\n"))
	if st, err := p.Wait(ctx); err != nil || st.Code != 0 {
		t.Fatalf("Wait = %+v, %v", st, err)
	}
	select {
	case reboot := <-powered:
		if reboot {
			t.Error("the drain rebooted instead of powering off")
		}
	case <-ctx.Done():
		t.Fatal("no power-off after the last exec ended")
	}
	if len(powered) != 0 {
		t.Error("powered off twice")
	}
}
