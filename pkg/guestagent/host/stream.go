// SPDX-License-Identifier: Apache-2.0

package host

import (
	"context"
	"io"
	"sync"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// kind is what a stream does; it decides which guest messages are valid.
type kind int

const (
	kindExec kind = iota
	kindExecTTY
	kindRead
	kindWrite
	kindList
	kindFS // stat, mkdir, remove, rename, copy
	kindMetrics
	kindShutdown
)

// stream is the host's end of one stream.
type stream struct {
	c    *Client
	id   uint32
	kind kind
	send *guestagent.SendWindow // credit for our Data
	recv *guestagent.RecvWindow // the guest's Data and FsEntries

	mu        sync.Mutex // guards q, wake, err, ended, abandoned, started
	q         []*agentpb.Frame
	wake      chan struct{}
	err       error // the connection's failure
	ended     bool  // the terminal frame arrived
	abandoned bool
	started   bool
}

func newStream(c *Client, id uint32, k kind) *stream {
	return &stream{
		c: c, id: id, kind: k,
		send: guestagent.NewSendWindow(guestagent.InitialWindow),
		recv: guestagent.NewRecvWindow(guestagent.InitialWindow),
		wake: make(chan struct{}),
	}
}

// check validates a guest frame against the stream's kind and window. It
// runs on the reader goroutine.
func (st *stream) check(f *agentpb.Frame) error {
	ok := false
	switch m := f.Msg.(type) {
	case *agentpb.Frame_Data:
		switch m.Data.GetChannel() {
		case agentpb.Channel_CHANNEL_STDOUT:
			ok = st.kind == kindExec || st.kind == kindExecTTY
		case agentpb.Channel_CHANNEL_STDERR:
			ok = st.kind == kindExec
		case agentpb.Channel_CHANNEL_FILE:
			ok = st.kind == kindRead
		}
		if ok {
			st.mu.Lock()
			ok = st.started || (st.kind != kindExec && st.kind != kindExecTTY)
			st.mu.Unlock()
		}
	case *agentpb.Frame_Entries:
		ok = st.kind == kindList
	case *agentpb.Frame_Window:
		ok = st.kind == kindExec || st.kind == kindExecTTY || st.kind == kindWrite
	case *agentpb.Frame_Started:
		st.mu.Lock()
		ok = (st.kind == kindExec || st.kind == kindExecTTY) && !st.started
		st.started = true
		st.mu.Unlock()
	case *agentpb.Frame_Exit:
		ok = st.kind == kindExec || st.kind == kindExecTTY
	case *agentpb.Frame_Error:
		ok = true
	case *agentpb.Frame_FsResult:
		ok = st.kind == kindRead || st.kind == kindWrite || st.kind == kindList || st.kind == kindFS
	case *agentpb.Frame_Metrics:
		ok = st.kind == kindMetrics
	case *agentpb.Frame_ShutdownAccepted:
		ok = st.kind == kindShutdown
	}
	if !ok {
		return guestagent.ProtocolErrorf("guest sent %T on stream %d out of place", f.Msg, st.id)
	}
	if n := guestagent.FlowCost(f); n > 0 {
		return st.recv.Receive(n)
	}
	return nil
}

// push queues a guest frame for the consumer (dropped once abandoned).
func (st *stream) push(f *agentpb.Frame) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if guestagent.IsTerminal(f) {
		st.ended = true
		st.send.Close(guestagent.ErrClosed)
	}
	if st.abandoned {
		return
	}
	st.q = append(st.q, f)
	close(st.wake)
	st.wake = make(chan struct{})
}

// fail ends the stream with the connection's error.
func (st *stream) fail(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err == nil {
		st.err = err
	}
	st.send.Close(err)
	close(st.wake)
	st.wake = make(chan struct{})
}

// next returns the next guest frame, io.EOF after the terminal frame was
// taken, or the connection's error. Data taken is credited back to the guest.
func (st *stream) next(ctx context.Context) (*agentpb.Frame, error) {
	for {
		st.mu.Lock()
		if len(st.q) > 0 {
			f := st.q[0]
			st.q[0] = nil
			st.q = st.q[1:]
			st.mu.Unlock()
			if n := guestagent.FlowCost(f); n > 0 {
				st.credit(ctx, n)
			}
			return f, nil
		}
		if st.ended {
			st.mu.Unlock()
			return nil, io.EOF
		}
		if st.err != nil {
			err := st.err
			st.mu.Unlock()
			return nil, err
		}
		wake := st.wake
		st.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// credit reports n consumed bytes and sends a window update when due.
func (st *stream) credit(ctx context.Context, n int) {
	inc := st.recv.Consume(n)
	if inc == 0 {
		return
	}
	st.mu.Lock()
	ended := st.ended || st.err != nil
	st.mu.Unlock()
	if ended {
		return
	}
	if err := st.write(ctx, &agentpb.Frame{Msg: &agentpb.Frame_Window{Window: &agentpb.WindowUpdate{Increment: inc}}}); err != nil {
		st.recv.Unconsume(inc)
	}
}

func (st *stream) write(ctx context.Context, f *agentpb.Frame) error {
	f.Stream = st.id
	err := st.c.fw.WriteFrame(ctx, f)
	if err != nil && ctx.Err() == nil {
		st.c.fail(err)
	}
	return err
}

// isOpen reports whether frames may still be sent on the stream.
func (st *stream) isOpen() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.err != nil:
		return st.err
	case st.ended || st.abandoned:
		return guestagent.ErrClosed
	}
	return nil
}

// sendData sends b on ch within the window.
func (st *stream) sendData(ctx context.Context, ch agentpb.Channel, b []byte) (int, error) {
	sent := 0
	for sent < len(b) {
		n, err := st.send.Acquire(ctx, min(len(b)-sent, guestagent.DataChunk))
		if err != nil {
			return sent, err
		}
		if err := st.write(ctx, &agentpb.Frame{Msg: &agentpb.Frame_Data{Data: &agentpb.Data{Channel: ch, Data: b[sent : sent+n]}}}); err != nil {
			st.send.Return(n)
			return sent, err
		}
		sent += n
	}
	return sent, nil
}

// abandon drops the stream's output and, unless it ended, asks the guest
// to stop sending. The id stays reserved until the terminal frame arrives.
func (st *stream) abandon(ctx context.Context) {
	st.mu.Lock()
	already := st.abandoned
	st.abandoned = true
	st.q = nil
	live := !st.ended && st.err == nil
	st.mu.Unlock()
	st.send.Close(guestagent.ErrClosed)
	if !already && live {
		_ = st.write(ctx, &agentpb.Frame{Msg: &agentpb.Frame_Cancel{Cancel: &agentpb.Cancel{}}})
	}
}
