// SPDX-License-Identifier: Apache-2.0

package guestagent_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	fw := guestagent.NewFrameWriter(&buf, 0)
	in := &agentpb.Frame{Stream: 7, Msg: &agentpb.Frame_Data{Data: &agentpb.Data{Channel: agentpb.Channel_CHANNEL_FILE, Data: []byte{0, 0xff}}}}
	if err := fw.WriteFrame(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	out, err := guestagent.NewFrameReader(&buf, 0).ReadFrame()
	if err != nil || out.GetStream() != 7 || !bytes.Equal(out.GetData().GetData(), []byte{0, 0xff}) {
		t.Errorf("ReadFrame = %v, %v", out, err)
	}
	// The writer refuses frames over the peer's maximum.
	fw.SetMaxFrameSize(guestagent.MinFrameSize)
	big := &agentpb.Frame{Msg: &agentpb.Frame_Data{Data: &agentpb.Data{Data: make([]byte, guestagent.MinFrameSize)}}}
	if err := fw.WriteFrame(context.Background(), big); !errors.Is(err, guestagent.ErrFrameTooLarge) {
		t.Errorf("WriteFrame(too big) = %v, want ErrFrameTooLarge", err)
	}
}

func TestFrameTooLargeBeforeAllocation(t *testing.T) {
	// The header claims 16 MiB but no body follows: the reader must refuse
	// on the header alone.
	_, err := guestagent.NewFrameReader(bytes.NewReader([]byte{1, 0, 0, 0}), 0).ReadFrame()
	if !errors.Is(err, guestagent.ErrFrameTooLarge) || !errors.Is(err, guestagent.ErrProtocol) {
		t.Errorf("ReadFrame = %v, want ErrFrameTooLarge and ErrProtocol", err)
	}
}

func TestWindows(t *testing.T) {
	w := guestagent.NewSendWindow(10)
	if n, err := w.Acquire(context.Background(), 100); n != 10 || err != nil {
		t.Fatalf("Acquire = %d, %v; want 10", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := w.Acquire(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire with no credit = %v, want a deadline error", err)
	}
	if err := w.Grant(0); !errors.Is(err, guestagent.ErrProtocol) {
		t.Errorf("Grant(0) = %v", err)
	}
	if err := w.Grant(1 << 31); !errors.Is(err, guestagent.ErrProtocol) {
		t.Errorf("Grant(2 GiB) = %v", err)
	}
	w.Close(guestagent.ErrClosed)
	if _, err := w.Acquire(context.Background(), 1); !errors.Is(err, guestagent.ErrClosed) {
		t.Errorf("Acquire after Close = %v", err)
	}

	r := guestagent.NewRecvWindow(100)
	if err := r.Receive(100); err != nil {
		t.Fatal(err)
	}
	if err := r.Receive(1); !errors.Is(err, guestagent.ErrProtocol) {
		t.Errorf("Receive past the window = %v", err)
	}
	if inc := r.Consume(10); inc != 0 {
		t.Errorf("Consume(10) granted %d before a quarter of the window", inc)
	}
	if inc := r.Consume(20); inc != 30 {
		t.Errorf("Consume(20) granted %d, want 30", inc)
	}
	if err := r.Receive(30); err != nil {
		t.Errorf("Receive within the regranted window = %v", err)
	}
}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		name          string
		host, guest   guestagent.Offer
		want          uint32
		wantErr       error
		wantCaps      int
		hostReplyErrs bool
	}{
		{name: "equal", want: 1, wantCaps: len(guestagent.AllCapabilities())},
		{name: "host newer", host: guestagent.Offer{MaxVersion: 9}, want: 1, wantCaps: len(guestagent.AllCapabilities())},
		{name: "guest newer", guest: guestagent.Offer{MaxVersion: 9}, host: guestagent.Offer{MaxVersion: 4}, want: 4, wantCaps: len(guestagent.AllCapabilities())},
		{name: "caps intersect", host: guestagent.Offer{Capabilities: []string{"exec", "quantum"}}, want: 1, wantCaps: 1},
		{name: "disjoint", host: guestagent.Offer{MinVersion: 5, MaxVersion: 6}, wantErr: guestagent.ErrIncompatible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply, gs, err := guestagent.Negotiate(tc.guest, tc.host.Hello())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || reply == nil {
					t.Fatalf("Negotiate = %v, %v; want %v and a reply", reply, err, tc.wantErr)
				}
				if _, err := guestagent.CheckReply(tc.host, reply); !errors.Is(err, tc.wantErr) {
					t.Errorf("CheckReply = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			hs, err := guestagent.CheckReply(tc.host, reply)
			if err != nil {
				t.Fatal(err)
			}
			if gs.Version != tc.want || hs.Version != tc.want || len(hs.Capabilities) != tc.wantCaps {
				t.Errorf("versions %d/%d caps %q, want %d and %d caps", gs.Version, hs.Version, hs.Capabilities, tc.want, tc.wantCaps)
			}
		})
	}
	// A reply choosing a version the host did not offer is a protocol error.
	bad := &agentpb.Frame{Msg: &agentpb.Frame_HelloReply{HelloReply: &agentpb.HelloReply{Version: 99, MaxFrameSize: 1 << 20, MaxStreams: 1}}}
	if _, err := guestagent.CheckReply(guestagent.Offer{}, bad); !errors.Is(err, guestagent.ErrProtocol) {
		t.Errorf("CheckReply(version 99) = %v", err)
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want []error
	}{
		{&fs.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}, []error{guestagent.ErrNotFound, fs.ErrNotExist}},
		{&fs.PathError{Op: "mkdir", Path: "/x", Err: syscall.EEXIST}, []error{guestagent.ErrExist, fs.ErrExist}},
		{&os.LinkError{Op: "rename", Old: "/a", New: "/b", Err: syscall.ENOTDIR}, []error{guestagent.ErrNotDir}},
		{syscall.EACCES, []error{guestagent.ErrPermission, fs.ErrPermission}},
		{syscall.EPERM, []error{guestagent.ErrPermission}},
		{syscall.ENOTEMPTY, []error{guestagent.ErrNotEmpty}},
		{&guestagent.SpawnError{Kind: guestagent.SpawnBadCwd, Path: "/nope", Errno: syscall.ENOENT}, []error{guestagent.ErrSpawn, syscall.ENOENT}},
		{errors.New("weird"), []error{guestagent.ErrIO}},
	} {
		got := guestagent.ErrorFromProto("op", guestagent.ErrorToProto(tc.err))
		for _, w := range tc.want {
			if !errors.Is(got, w) {
				t.Errorf("round trip of %v = %v, does not match %v", tc.err, got, w)
			}
		}
	}
	// Guest text is sanitised.
	got := guestagent.ErrorFromProto("op", &agentpb.Error{Code: 99, Message: "\x1b[2J\xff" + string(make([]byte, 10000))})
	if s := got.Error(); bytes.ContainsAny([]byte(s), "\x1b\x00") || len(s) > 1024 || !errors.Is(got, guestagent.ErrIO) {
		t.Errorf("unsanitised error: %q", s)
	}
}
