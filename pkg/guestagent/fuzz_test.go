// SPDX-License-Identifier: Apache-2.0

package guestagent_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

func frameBytes(f *agentpb.Frame) []byte {
	b, _ := proto.Marshal(f)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// FuzzFrame decodes arbitrary bytes as a frame stream, as both sides do with
// their peer's bytes, and runs every frame through the validators. Nothing
// may panic, and every error is either a protocol error or an end of input.
func FuzzFrame(f *testing.F) {
	f.Add(frameBytes(guestagent.Offer{}.Hello()))
	f.Add(frameBytes(&agentpb.Frame{Stream: 3, Msg: &agentpb.Frame_Data{Data: &agentpb.Data{Channel: agentpb.Channel_CHANNEL_STDOUT, Data: []byte("A\x00B")}}}))
	f.Add(frameBytes(&agentpb.Frame{Stream: 1, Msg: &agentpb.Frame_Error{Error: &agentpb.Error{Code: agentpb.ErrorCode_ERROR_SPAWN, Spawn: 4, Errno: 2, Message: "\x1b[31m"}}}))
	f.Add(frameBytes(&agentpb.Frame{Msg: &agentpb.Frame_HelloReply{HelloReply: &agentpb.HelloReply{Version: 1, MaxFrameSize: 1 << 20, MaxStreams: 4}}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 2, 0x08})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := guestagent.NewFrameReader(bytes.NewReader(data), guestagent.MinFrameSize)
		for {
			fm, err := fr.ReadFrame()
			if err != nil {
				if !errors.Is(err, guestagent.ErrProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("ReadFrame = %v: neither a protocol error nor an end of input", err)
				}
				return
			}
			if fm.Msg == nil {
				t.Fatal("ReadFrame returned a frame without a message")
			}
			_, _, _ = guestagent.Negotiate(guestagent.Offer{}, fm)
			_, _ = guestagent.CheckReply(guestagent.Offer{}, fm)
			if e := fm.GetError(); e != nil {
				if s := guestagent.ErrorFromProto("op", e).Error(); len(s) > 4096 {
					t.Fatalf("error text of %d bytes", len(s))
				}
			}
			_ = guestagent.FlowCost(fm)
			_ = guestagent.IsTerminal(fm)
			w := guestagent.NewSendWindow(0)
			_ = w.Grant(fm.GetWindow().GetIncrement())
		}
	})
}
