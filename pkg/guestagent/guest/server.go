// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// DefaultPath is the PATH of a process whose environment sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config configures a Server.
type Config struct {
	// Root is the directory whose etc/passwd and etc/group resolve exec
	// users. "" means "/". It does not confine file operations.
	Root string
	// Env is the base environment (KEY=VALUE) under each exec's own. nil
	// means PATH=DefaultPath only.
	Env []string
	// MaxStreams is the number of concurrent streams per connection. Zero
	// means guestagent.DefaultMaxStreams.
	MaxStreams uint32
	// MaxFrameSize is the largest frame accepted. Zero means
	// guestagent.DefaultMaxFrameSize.
	MaxFrameSize uint32
	// DrainTimeout bounds how long a process's output is still read after
	// it exited, while its background children hold the pipes open. Zero
	// means one second.
	DrainTimeout time.Duration
	// HandshakeTimeout bounds the wait for the host's hello. Zero means ten
	// seconds.
	HandshakeTimeout time.Duration
	// MinVersion and MaxVersion bound the protocol versions served. Zero
	// means guestagent.MinVersion and guestagent.Version.
	MinVersion, MaxVersion uint32
	// Capabilities offered. nil means guestagent.AllCapabilities.
	Capabilities []string

	// Power ends the machine when the host sends a ShutdownRequest: it
	// must start the shutdown (or reboot) and return at once. Nil refuses
	// the request as unavailable. The agent's init implements it.
	Power func(reboot bool) error
	// Agent describes the agent in the hello reply.
	Agent string
}

// Server serves the agent protocol.
type Server struct {
	cfg   Config
	offer guestagent.Offer

	mu       sync.Mutex // guards the fields below
	running  int        // execs started and not yet finished
	draining bool       // a drain was requested: no new execs
	powered  bool       // the drain called Config.Power
}

// New returns a Server for cfg. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=" + DefaultPath}
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.DrainTimeout < 0 || cfg.HandshakeTimeout < 0 {
		return nil, errors.New("guest: negative timeout in config")
	}
	o := guestagent.Offer{
		MinVersion: cfg.MinVersion, MaxVersion: cfg.MaxVersion, Capabilities: cfg.Capabilities,
		MaxFrameSize: cfg.MaxFrameSize, MaxStreams: cfg.MaxStreams, Agent: cfg.Agent,
	}
	if o.MaxVersion != 0 && o.MinVersion > o.MaxVersion {
		return nil, fmt.Errorf("guest: version range %d-%d is empty", o.MinVersion, o.MaxVersion)
	}
	return &Server{cfg: cfg, offer: o}, nil
}

// Serve accepts connections from ln and serves each until ctx is cancelled
// or ln fails. It closes ln and returns after every connection it served has
// ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			ln.Close()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("guest: accept: %w", err)
		}
		wg.Go(func() { _ = s.ServeConn(ctx, c) })
	}
}

// ServeConn serves one host connection until it ends or ctx is cancelled,
// then closes it, kills and reaps the processes it started and returns once
// all of its goroutines have exited. A clean end of the connection gives
// nil; a protocol violation by the host an error matching
// guestagent.ErrProtocol.
func (s *Server) ServeConn(ctx context.Context, rw io.ReadWriteCloser) error {
	ctx, cancel := context.WithCancel(ctx)
	c := &conn{
		srv:     s,
		rw:      rw,
		ctx:     ctx,
		fr:      guestagent.NewFrameReader(rw, s.cfg.MaxFrameSize),
		fw:      guestagent.NewFrameWriter(rw, guestagent.MaxFrameSizeLimit),
		streams: make(map[uint32]*stream),
	}
	stop := context.AfterFunc(ctx, func() { rw.Close() })
	err := c.serve()
	canceled := ctx.Err() != nil
	cancel()
	stop()
	rw.Close()
	c.wg.Wait()
	switch {
	case errors.Is(err, guestagent.ErrProtocol), errors.Is(err, guestagent.ErrIncompatible), errors.Is(err, errHandshakeTimeout):
		return err
	case errors.Is(err, io.EOF), canceled:
		return nil
	}
	return err
}

var errHandshakeTimeout = errors.New("guest: no hello from the host in time")

// conn is one host connection.
type conn struct {
	srv  *Server
	rw   io.ReadWriteCloser
	ctx  context.Context // cancelled when the connection ends; bounds stream goroutines
	fr   *guestagent.FrameReader
	fw   *guestagent.FrameWriter
	sess guestagent.Session
	wg   sync.WaitGroup // stream goroutines

	mu      sync.Mutex // guards streams, lastID
	streams map[uint32]*stream
	lastID  uint32
}

func (c *conn) serve() error {
	timer := time.AfterFunc(c.srv.cfg.HandshakeTimeout, func() { c.rw.Close() })
	first, err := c.fr.ReadFrame()
	if !timer.Stop() {
		return errHandshakeTimeout
	}
	if err != nil {
		return fmt.Errorf("guest: read hello: %w", err)
	}
	reply, sess, herr := guestagent.Negotiate(c.srv.offer, first)
	if reply != nil {
		if err := c.fw.WriteFrame(c.ctx, reply); err != nil {
			return err
		}
	}
	if herr != nil {
		return herr
	}
	c.sess = sess
	c.fw.SetMaxFrameSize(sess.PeerMaxFrameSize)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		if err := c.dispatch(f); err != nil {
			return err
		}
	}
}

// dispatch routes one host frame. It never blocks on the network: opens
// start a goroutine, data is queued within the window, control is applied.
func (c *conn) dispatch(f *agentpb.Frame) error {
	id := f.GetStream()
	if id == 0 {
		return guestagent.ProtocolErrorf("%T on stream 0 after the handshake", f.Msg)
	}
	switch f.Msg.(type) {
	case *agentpb.Frame_Exec, *agentpb.Frame_Fs, *agentpb.Frame_MetricsRequest, *agentpb.Frame_Shutdown:
		return c.open(id, f)
	}
	c.mu.Lock()
	st := c.streams[id]
	last := c.lastID
	c.mu.Unlock()
	if st == nil {
		if id <= last {
			return nil // finished: the frame crossed our terminal frame
		}
		return guestagent.ProtocolErrorf("%T for stream %d, which was never opened", f.Msg, id)
	}
	return st.deliver(f)
}

func (c *conn) open(id uint32, f *agentpb.Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id <= c.lastID {
		return guestagent.ProtocolErrorf("stream %d opened after stream %d", id, c.lastID)
	}
	if uint32(len(c.streams)) >= c.sess.MaxStreams {
		return guestagent.ProtocolErrorf("more than %d concurrent streams", c.sess.MaxStreams)
	}
	c.lastID = id
	st := newStream(c, id)
	switch m := f.Msg.(type) {
	case *agentpb.Frame_Exec:
		if !c.sess.Has(guestagent.CapExec) {
			return guestagent.ProtocolErrorf("exec without the %q capability", guestagent.CapExec)
		}
		if m.Exec.GetStdin() == agentpb.StdinMode_STDIN_PIPE || m.Exec.GetTty() {
			st.accept = agentpb.Channel_CHANNEL_STDIN
		}
		c.streams[id] = st
		c.wg.Go(func() { c.runExec(st, m.Exec) })
	case *agentpb.Frame_Fs:
		if !c.sess.Has(guestagent.CapFS) {
			return guestagent.ProtocolErrorf("fs without the %q capability", guestagent.CapFS)
		}
		if m.Fs.GetWrite() != nil {
			st.accept = agentpb.Channel_CHANNEL_FILE
		}
		c.streams[id] = st
		c.wg.Go(func() { c.runFS(st, m.Fs) })
	case *agentpb.Frame_MetricsRequest:
		c.streams[id] = st
		c.wg.Go(func() { st.finish(c.metrics(m.MetricsRequest)) })
	case *agentpb.Frame_Shutdown:
		if !c.sess.Has(guestagent.CapPower) {
			return guestagent.ProtocolErrorf("shutdown without the %q capability", guestagent.CapPower)
		}
		c.streams[id] = st
		c.wg.Go(func() { st.finish(c.shutdown(m.Shutdown)) })
	}
	return nil
}

// errCanceled is the window error after the host's Cancel.
var errCanceled = errors.New("guest: stream canceled by the host")

// controller receives an exec stream's control frames.
type controller interface {
	signal(sig int)
	resize(rows, cols uint16)
}

// stream is one open stream.
type stream struct {
	c    *conn
	id   uint32
	send *guestagent.SendWindow // credit for our Data to the host
	recv *guestagent.RecvWindow // the host's Data to us

	accept agentpb.Channel // the channel the host may send Data on; set before the goroutine starts

	mu       sync.Mutex // guards in, inEOF, inWake, canceled, ctl
	in       [][]byte
	inEOF    bool
	inWake   chan struct{}
	canceled bool
	ctl      controller
}

func newStream(c *conn, id uint32) *stream {
	return &stream{
		c: c, id: id,
		send:   guestagent.NewSendWindow(guestagent.InitialWindow),
		recv:   guestagent.NewRecvWindow(guestagent.InitialWindow),
		inWake: make(chan struct{}),
	}
}

// deliver applies one host frame for the stream. It is called by the frame
// reader and must not block.
func (st *stream) deliver(f *agentpb.Frame) error {
	switch m := f.Msg.(type) {
	case *agentpb.Frame_Data:
		if st.accept == agentpb.Channel_CHANNEL_UNSPECIFIED || m.Data.GetChannel() != st.accept {
			return guestagent.ProtocolErrorf("data on channel %v of stream %d", m.Data.GetChannel(), st.id)
		}
		if err := st.recv.Receive(len(m.Data.GetData())); err != nil {
			return err
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.inEOF {
			return guestagent.ProtocolErrorf("data after close on stream %d", st.id)
		}
		if len(m.Data.GetData()) > 0 {
			st.in = append(st.in, m.Data.GetData())
			st.wakeIn()
		}
	case *agentpb.Frame_CloseWrite:
		st.mu.Lock()
		st.inEOF = true
		st.wakeIn()
		st.mu.Unlock()
	case *agentpb.Frame_Window:
		return st.send.Grant(m.Window.GetIncrement())
	case *agentpb.Frame_Cancel:
		st.mu.Lock()
		st.canceled = true
		st.wakeIn()
		st.mu.Unlock()
		st.send.Close(errCanceled)
	case *agentpb.Frame_Signal:
		st.mu.Lock()
		ctl := st.ctl
		st.mu.Unlock()
		if ctl != nil {
			ctl.signal(int(m.Signal.GetSignal()))
		}
	case *agentpb.Frame_Resize:
		st.mu.Lock()
		ctl := st.ctl
		st.mu.Unlock()
		if ctl != nil && m.Resize.GetRows() <= 0xffff && m.Resize.GetCols() <= 0xffff {
			ctl.resize(uint16(m.Resize.GetRows()), uint16(m.Resize.GetCols()))
		}
	default:
		return guestagent.ProtocolErrorf("host sent %T on stream %d", f.Msg, st.id)
	}
	return nil
}

// wakeIn wakes readIn; st.mu must be held.
func (st *stream) wakeIn() {
	close(st.inWake)
	st.inWake = make(chan struct{})
}

func (st *stream) setController(ctl controller) {
	st.mu.Lock()
	st.ctl = ctl
	st.mu.Unlock()
}

// readIn returns the next chunk the host sent, io.EOF after CloseWrite, or
// errCanceled. The caller reports the bytes with consumed once used.
func (st *stream) readIn(ctx context.Context) ([]byte, error) {
	for {
		st.mu.Lock()
		if st.canceled {
			st.mu.Unlock()
			return nil, errCanceled
		}
		if len(st.in) > 0 {
			b := st.in[0]
			st.in[0] = nil
			st.in = st.in[1:]
			st.mu.Unlock()
			return b, nil
		}
		if st.inEOF {
			st.mu.Unlock()
			return nil, io.EOF
		}
		wake := st.inWake
		st.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// consumed grants the host more window once enough bytes were used.
func (st *stream) consumed(n int) {
	if inc := st.recv.Consume(n); inc > 0 {
		err := st.c.fw.WriteFrame(st.c.ctx, &agentpb.Frame{Stream: st.id, Msg: &agentpb.Frame_Window{Window: &agentpb.WindowUpdate{Increment: inc}}})
		if err != nil {
			st.recv.Unconsume(inc)
		}
	}
}

func (st *stream) write(f *agentpb.Frame) error {
	f.Stream = st.id
	return st.c.fw.WriteFrame(st.c.ctx, f)
}

// sendData sends b on ch within the window. It returns errCanceled once the
// host canceled the stream.
func (st *stream) sendData(ch agentpb.Channel, b []byte) error {
	for len(b) > 0 {
		n, err := st.send.Acquire(st.c.ctx, len(b))
		if err != nil {
			return err
		}
		if err := st.write(&agentpb.Frame{Msg: &agentpb.Frame_Data{Data: &agentpb.Data{Channel: ch, Data: b[:n]}}}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// pump copies r to the host on ch until r ends. After a Cancel it reads
// and drops the rest, so the writer never blocks on us.
func (st *stream) pump(ch agentpb.Channel, r io.Reader) {
	buf := make([]byte, guestagent.DataChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := st.sendData(ch, buf[:n]); err != nil {
				if errors.Is(err, errCanceled) {
					_, _ = io.Copy(io.Discard, r)
				}
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}

// finish sends the stream's terminal frame (f, or an Error for err) and
// forgets the stream.
func (st *stream) finish(f *agentpb.Frame, err error) {
	if err != nil {
		f = &agentpb.Frame{Msg: &agentpb.Frame_Error{Error: guestagent.ErrorToProto(err)}}
	}
	_ = st.write(f)
	st.c.mu.Lock()
	delete(st.c.streams, st.id)
	st.c.mu.Unlock()
}
