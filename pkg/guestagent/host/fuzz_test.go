// SPDX-License-Identifier: Apache-2.0

package host_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/guest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

// FuzzClient plays a hostile guest: after a valid hello reply it sends
// arbitrary bytes while the client has an exec and a read open. The client
// must neither panic nor hang.
func FuzzClient(f *testing.F) {
	f.Add(rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Started{Started: &agentpb.ExecStarted{Pid: 9}}}))
	f.Add(concat(
		rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Started{Started: &agentpb.ExecStarted{Pid: 9}}}),
		rawFrame(dataFrame(1, agentpb.Channel_CHANNEL_STDOUT, 10)),
		rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Exit{Exit: &agentpb.ExecExit{Code: -1, Signal: 9}}})))
	f.Add(rawFrame(&agentpb.Frame{Stream: 2, Msg: &agentpb.Frame_Error{Error: &agentpb.Error{Code: 1}}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := fakeGuest(t, func(fr *guestagent.FrameReader, w net.Conn) {
			_, _ = w.Write(data)
			w.Close()
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if p, err := c.Exec(ctx, host.ExecConfig{Argv: []string{"x"}}); err == nil {
				_, _ = p.Output(ctx)
				p.Close()
			}
		}()
		if r, err := c.OpenReader(ctx, "/x"); err == nil {
			_, _ = io.ReadAll(r)
			r.Close()
		}
		<-done
		c.Close()
	})
}

// FuzzServer plays a hostile host against the guest server after a valid
// hello. The server offers only the metrics capability, so fuzzed input
// cannot run programs or touch files; the framing, stream table, windows
// and control paths are all exercised. It must neither panic nor hang.
func FuzzServer(f *testing.F) {
	f.Add(rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_MetricsRequest{MetricsRequest: &agentpb.MetricsRequest{}}}))
	f.Add(concat(
		rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_MetricsRequest{MetricsRequest: &agentpb.MetricsRequest{DiskPath: "rel"}}}),
		rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Cancel{Cancel: &agentpb.Cancel{}}}),
		rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Signal{Signal: &agentpb.Signal{Signal: 9}}})))
	f.Add(rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Exec{Exec: &agentpb.ExecRequest{Argv: []string{"rm"}}}}))
	f.Add([]byte{0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, err := guest.New(guest.Config{Capabilities: []string{guestagent.CapMetrics}, HandshakeTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		a, b := socketPair(t)
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(context.Background(), b) }()
		go func() { _, _ = io.Copy(io.Discard, a) }()
		_, _ = a.Write(concat(rawFrame(hello()), data))
		a.(*net.UnixConn).CloseWrite()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return after the host's input ended")
		}
		a.Close()
	})
}
