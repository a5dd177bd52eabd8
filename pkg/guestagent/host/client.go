// SPDX-License-Identifier: Apache-2.0

package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// Config configures a Client. The zero value is ready to use.
type Config struct {
	// MaxFrameSize is the largest frame accepted from the guest. Zero means
	// guestagent.DefaultMaxFrameSize.
	MaxFrameSize uint32
	// MinVersion and MaxVersion bound the protocol versions offered. Zero
	// means guestagent.MinVersion and guestagent.Version.
	MinVersion, MaxVersion uint32
	// Capabilities offered. nil means guestagent.AllCapabilities.
	Capabilities []string
	// Agent describes the host in the hello.
	Agent string
}

// Client talks to one guest agent over one connection. Its methods are safe
// for concurrent use; many execs and file transfers run at once.
type Client struct {
	conn  io.ReadWriteCloser
	fr    *guestagent.FrameReader
	fw    *guestagent.FrameWriter
	sess  guestagent.Session
	slots chan struct{} // one token per stream the guest serves
	done  chan struct{} // closed when the reader has stopped
	// openSem is a one-token lock held while a stream id is allocated and
	// its open frame written.
	openSem chan struct{}

	wg        sync.WaitGroup // the reader and stdin feeders
	closeOnce sync.Once

	mu      sync.Mutex // guards streams, nextID, err
	streams map[uint32]*stream
	nextID  uint32
	err     error
}

// Dial runs the handshake over conn and starts the frame reader; Close
// stops it. ctx bounds the handshake only. On failure conn is closed; an
// incompatible guest gives an error matching guestagent.ErrIncompatible.
func Dial(ctx context.Context, conn io.ReadWriteCloser, cfg Config) (*Client, error) {
	offer := guestagent.Offer{
		MinVersion: cfg.MinVersion, MaxVersion: cfg.MaxVersion, Capabilities: cfg.Capabilities,
		MaxFrameSize: cfg.MaxFrameSize, Agent: cfg.Agent,
	}
	c := &Client{
		conn:    conn,
		fr:      guestagent.NewFrameReader(conn, cfg.MaxFrameSize),
		fw:      guestagent.NewFrameWriter(conn, guestagent.MaxFrameSizeLimit),
		done:    make(chan struct{}),
		openSem: make(chan struct{}, 1),
		streams: make(map[uint32]*stream),
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	sess, err := c.handshake(ctx, offer)
	if !stop() || err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("host: handshake: %w", ctx.Err())
		}
		return nil, fmt.Errorf("host: handshake: %w", err)
	}
	c.sess = sess
	c.fw.SetMaxFrameSize(sess.PeerMaxFrameSize)
	c.slots = make(chan struct{}, sess.MaxStreams)
	c.wg.Go(c.read)
	return c, nil
}

func (c *Client) handshake(ctx context.Context, offer guestagent.Offer) (guestagent.Session, error) {
	if err := c.fw.WriteFrame(ctx, offer.Hello()); err != nil {
		return guestagent.Session{}, err
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return guestagent.Session{}, err
	}
	return guestagent.CheckReply(offer, f)
}

// Session returns what the handshake agreed.
func (c *Client) Session() guestagent.Session { return c.sess }

// Done is closed when the connection has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection, fails every open stream with
// guestagent.ErrClosed and waits for the client's goroutines. It is
// idempotent. Processes in the guest are killed by the agent when their
// connection ends.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.fail(guestagent.ErrClosed)
		c.wg.Wait()
	})
	return nil
}

// fail ends the connection with err (the first error wins).
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	streams := c.streams
	c.streams = map[uint32]*stream{}
	c.mu.Unlock()
	c.conn.Close()
	for _, st := range streams {
		st.fail(err)
	}
}

// read is the frame reader. It never writes: control frames are applied,
// data is queued within the stream's window.
func (c *Client) read() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.dispatch(f)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: %w", guestagent.ErrClosed, err)
			}
			c.fail(err)
			return
		}
	}
}

// dispatch routes one guest frame. The frame is guest-controlled: its
// stream must be open, its message must fit the stream's kind and its data
// the window.
func (c *Client) dispatch(f *agentpb.Frame) error {
	id := f.GetStream()
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st == nil {
		return guestagent.ProtocolErrorf("%T for stream %d, which is not open", f.Msg, id)
	}
	if err := st.check(f); err != nil {
		return err
	}
	if w, ok := f.Msg.(*agentpb.Frame_Window); ok {
		return st.send.Grant(w.Window.GetIncrement())
	}
	if guestagent.IsTerminal(f) {
		c.mu.Lock()
		delete(c.streams, id)
		c.mu.Unlock()
		<-c.slots
	}
	st.push(f)
	return nil
}

// open starts a stream of kind with its open message.
func (c *Client) open(ctx context.Context, k kind, f *agentpb.Frame) (*stream, error) {
	select {
	case c.slots <- struct{}{}:
	case <-c.done:
		return nil, c.closedErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Ids must reach the guest in increasing order: allocate and send under
	// one token.
	select {
	case c.openSem <- struct{}{}:
	case <-ctx.Done():
		<-c.slots
		return nil, ctx.Err()
	}
	defer func() { <-c.openSem }()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		<-c.slots
		return nil, c.closedErr()
	}
	c.nextID++
	st := newStream(c, c.nextID, k)
	c.streams[st.id] = st
	c.mu.Unlock()
	f.Stream = st.id
	if err := c.fw.WriteFrame(ctx, f); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Nothing was written: forget the stream.
			c.mu.Lock()
			_, ok := c.streams[st.id]
			delete(c.streams, st.id)
			c.mu.Unlock()
			if ok {
				<-c.slots
			}
			return nil, err
		}
		c.fail(err)
		return nil, err
	}
	return st, nil
}

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return guestagent.ErrClosed
	}
	if errors.Is(c.err, guestagent.ErrClosed) {
		return c.err
	}
	return fmt.Errorf("%w: %w", guestagent.ErrClosed, c.err)
}
