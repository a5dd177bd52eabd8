// SPDX-License-Identifier: Apache-2.0

package host_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/guest"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/host"
)

func TestHandshakeVersions(t *testing.T) {
	for _, tc := range []struct {
		name        string
		guest       guest.Config
		host        host.Config
		wantVersion uint32
		wantErr     error
	}{
		{"same", guest.Config{}, host.Config{}, 1, nil},
		{"newer host degrades", guest.Config{}, host.Config{MaxVersion: 7}, 1, nil},
		{"newer guest degrades", guest.Config{MaxVersion: 5}, host.Config{}, 1, nil},
		{"both newer", guest.Config{MaxVersion: 3}, host.Config{MaxVersion: 4}, 3, nil},
		{"host too new", guest.Config{}, host.Config{MinVersion: 2, MaxVersion: 3}, 0, guestagent.ErrIncompatible},
		{"guest too new", guest.Config{MinVersion: 2, MaxVersion: 2}, host.Config{}, 0, guestagent.ErrIncompatible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := guest.New(tc.guest)
			if err != nil {
				t.Fatal(err)
			}
			a, b := socketPair(t)
			done := make(chan error, 1)
			go func() { done <- srv.ServeConn(context.Background(), b) }()
			c, err := host.Dial(testCtx(t), a, tc.host)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Dial = %v, want %v", err, tc.wantErr)
				}
				var ve *guestagent.VersionError
				if !errors.As(err, &ve) {
					t.Errorf("Dial = %v, want a *VersionError", err)
				}
				if err := <-done; !errors.Is(err, guestagent.ErrIncompatible) {
					t.Errorf("ServeConn = %v, want ErrIncompatible", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial = %v", err)
			}
			if v := c.Session().Version; v != tc.wantVersion {
				t.Errorf("version = %d, want %d", v, tc.wantVersion)
			}
			c.Close()
			if err := <-done; err != nil {
				t.Errorf("ServeConn = %v", err)
			}
		})
	}
}

func TestCapabilitiesNegotiated(t *testing.T) {
	e := start(t, guest.Config{Capabilities: []string{guestagent.CapExec, "future-thing"}}, host.Config{})
	if got := e.client.Session().Capabilities; len(got) != 1 || got[0] != guestagent.CapExec {
		t.Errorf("capabilities = %q, want [exec]", got)
	}
	if _, err := e.client.Stat(testCtx(t), "/"); err == nil {
		t.Error("Stat without the fs capability succeeded")
	}
	if _, err := e.client.Exec(testCtx(t), host.ExecConfig{Argv: []string{"true"}, TTY: true}); err == nil {
		t.Error("tty exec without the tty capability succeeded")
	}
}

func rawFrame(f *agentpb.Frame) []byte {
	b, err := proto.Marshal(f)
	if err != nil {
		panic(err) // test input is well-formed
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func hello() *agentpb.Frame { return guestagent.Offer{}.Hello() }

func dataFrame(stream uint32, ch agentpb.Channel, n int) *agentpb.Frame {
	return &agentpb.Frame{Stream: stream, Msg: &agentpb.Frame_Data{Data: &agentpb.Data{Channel: ch, Data: make([]byte, n)}}}
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestHostileHostFrames feeds the guest server bad frames after a valid
// hello: each must end the connection with a protocol error, promptly.
func TestHostileHostFrames(t *testing.T) {
	dir := t.TempDir()
	write := &agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Fs{Fs: &agentpb.FsRequest{Op: &agentpb.FsRequest_Write{Write: &agentpb.FsWrite{Path: dir + "/f"}}}}}
	// A process that never reads stdin: the guest grants no more window
	// than the pipe holds, so a host sending past the window is caught.
	sleeper := &agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Exec{Exec: &agentpb.ExecRequest{Argv: []string{"sleep", "30"}, Stdin: agentpb.StdinMode_STDIN_PIPE}}}
	flood := [][]byte{rawFrame(sleeper)}
	for range guestagent.InitialWindow/guestagent.DataChunk + 8 {
		flood = append(flood, rawFrame(dataFrame(1, agentpb.Channel_CHANNEL_STDIN, guestagent.DataChunk)))
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"oversized length", []byte{0xff, 0xff, 0xff, 0xff}},
		{"zero length", []byte{0, 0, 0, 0}},
		{"garbage", []byte{0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"unknown stream", rawFrame(dataFrame(99, agentpb.Channel_CHANNEL_STDIN, 1))},
		{"second hello", rawFrame(hello())},
		{"stream 0", rawFrame(&agentpb.Frame{Msg: &agentpb.Frame_Cancel{Cancel: &agentpb.Cancel{}}})},
		{"guest message from host", rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Exit{Exit: &agentpb.ExecExit{}}})},
		{"reused stream id", concat(rawFrame(write), rawFrame(write))},
		{"wrong channel", concat(rawFrame(write), rawFrame(dataFrame(1, agentpb.Channel_CHANNEL_STDIN, 1)))},
		{"data beyond window", concat(flood...)},
		{"zero window update", concat(rawFrame(write), rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Window{Window: &agentpb.WindowUpdate{}}}))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := guest.New(guest.Config{})
			a, b := socketPair(t)
			defer a.Close()
			done := make(chan error, 1)
			go func() { done <- srv.ServeConn(context.Background(), b) }()
			if _, err := a.Write(rawFrame(hello())); err != nil {
				t.Fatal(err)
			}
			fr := guestagent.NewFrameReader(a, 0)
			if f, err := fr.ReadFrame(); err != nil || f.GetHelloReply() == nil {
				t.Fatalf("hello reply = %v, %v", f, err)
			}
			go func() { _, _ = io.Copy(io.Discard, a) }()
			_, _ = a.Write(tc.bytes)
			select {
			case err := <-done:
				if !errors.Is(err, guestagent.ErrProtocol) {
					t.Errorf("ServeConn = %v, want ErrProtocol", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("ServeConn did not return")
			}
		})
	}
}

// TestHostileHostBeforeHello: bad first frames are refused.
func TestHostileHostBeforeHello(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"not a hello", rawFrame(dataFrame(0, agentpb.Channel_CHANNEL_STDIN, 1))},
		{"bad range", rawFrame(&agentpb.Frame{Msg: &agentpb.Frame_Hello{Hello: &agentpb.Hello{MinVersion: 3, MaxVersion: 1, MaxFrameSize: 1 << 20}}})},
		{"tiny frames", rawFrame(&agentpb.Frame{Msg: &agentpb.Frame_Hello{Hello: &agentpb.Hello{MinVersion: 1, MaxVersion: 1, MaxFrameSize: 10}}})},
		{"oversized", []byte{0x7f, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := guest.New(guest.Config{})
			a, b := socketPair(t)
			defer a.Close()
			done := make(chan error, 1)
			go func() { done <- srv.ServeConn(context.Background(), b) }()
			go func() { _, _ = io.Copy(io.Discard, a) }()
			_, _ = a.Write(tc.bytes)
			if err := <-done; !errors.Is(err, guestagent.ErrProtocol) {
				t.Errorf("ServeConn = %v, want ErrProtocol", err)
			}
		})
	}
	// A host that says nothing is dropped after the handshake timeout.
	srv, _ := guest.New(guest.Config{HandshakeTimeout: 50 * time.Millisecond})
	a, b := socketPair(t)
	defer a.Close()
	if err := srv.ServeConn(context.Background(), b); err == nil {
		t.Error("silent host: ServeConn = nil, want an error")
	}
}

// fakeGuest answers the hello and then runs script on the connection.
func fakeGuest(t *testing.T, script func(fr *guestagent.FrameReader, w net.Conn)) *host.Client {
	t.Helper()
	a, b := socketPair(t)
	go func() {
		defer b.Close()
		fr := guestagent.NewFrameReader(b, 0)
		first, err := fr.ReadFrame()
		if err != nil {
			return
		}
		reply, _, err := guestagent.Negotiate(guestagent.Offer{}, first)
		if err != nil {
			return
		}
		if _, err := b.Write(rawFrame(reply)); err != nil {
			return
		}
		script(fr, b)
		_, _ = io.Copy(io.Discard, b)
	}()
	c, err := host.Dial(testCtx(t), a, host.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestHostileGuestFrames: the client survives a hostile guest with an
// error, never a panic or a hang.
func TestHostileGuestFrames(t *testing.T) {
	started := rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Started{Started: &agentpb.ExecStarted{Pid: 1}}})
	var flood []byte
	for range guestagent.InitialWindow/guestagent.DataChunk + 1 {
		flood = append(flood, rawFrame(dataFrame(1, agentpb.Channel_CHANNEL_STDOUT, guestagent.DataChunk))...)
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"oversized length", []byte{0xff, 0xff, 0xff, 0xff}},
		{"garbage", []byte{0, 0, 0, 3, 0xff, 0xff, 0xff}},
		{"unknown stream", rawFrame(&agentpb.Frame{Stream: 42, Msg: &agentpb.Frame_Started{Started: &agentpb.ExecStarted{}}})},
		{"data before started", rawFrame(dataFrame(1, agentpb.Channel_CHANNEL_STDOUT, 1))},
		{"started twice", concat(started, started)},
		{"file data on exec", concat(started, rawFrame(dataFrame(1, agentpb.Channel_CHANNEL_FILE, 1)))},
		{"data beyond window", concat(started, flood)},
		{"fs result on exec", concat(started, rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_FsResult{FsResult: &agentpb.FsResult{}}}))},
		{"frame after exit", concat(started, rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Exit{Exit: &agentpb.ExecExit{}}}), started)},
		{"huge window update", concat(started, rawFrame(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Window{Window: &agentpb.WindowUpdate{Increment: 1 << 31}}}))},
		{"cut mid-frame", []byte{0, 0, 1, 0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeGuest(t, func(fr *guestagent.FrameReader, w net.Conn) {
				if _, err := fr.ReadFrame(); err != nil { // the exec
					return
				}
				_, _ = w.Write(tc.bytes)
				if tc.name == "cut mid-frame" {
					w.Close()
				}
			})
			ctx := testCtx(t)
			// The output is not read, so the window is never replenished.
			p, err := c.Exec(ctx, host.ExecConfig{Argv: []string{"x"}})
			if err == nil {
				defer p.Close()
			}
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("client did not fail")
			}
			if tc.name != "cut mid-frame" && !errors.Is(c.Err(), guestagent.ErrProtocol) {
				t.Errorf("Err = %v, want ErrProtocol", c.Err())
			}
			if _, err := c.Exec(ctx, host.ExecConfig{Argv: []string{"x"}}); !errors.Is(err, guestagent.ErrClosed) {
				t.Errorf("Exec after failure = %v, want ErrClosed", err)
			}
		})
	}
}
