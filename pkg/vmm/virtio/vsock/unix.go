// SPDX-License-Identifier: Apache-2.0

package vsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Firecracker's hybrid vsock protocol (docs/vsock.md in Firecracker): a host
// process connects to a Unix socket, writes "CONNECT <port>\n", and once the
// guest accepts, reads "OK <host port>\n" and then talks to the guest. A
// guest connect to host port P is forwarded to the Unix socket "<path>_P".
const (
	// maxConnectLine bounds the CONNECT line, newline included; the
	// longest valid one, "CONNECT 4294967295\n", has 19 bytes.
	maxConnectLine = 64
	// DefaultUnixTimeout is the default of UnixConfig.HandshakeTimeout and
	// UnixConfig.DialTimeout: Firecracker's request timeout (2000 ms).
	DefaultUnixTimeout = 2 * time.Second
)

// UnixConfig configures a UnixProxy.
type UnixConfig struct {
	// Path is the Unix socket host processes connect to. Required; Run
	// fails if something exists there, and removes the socket when it
	// returns.
	Path string
	// ForwardGuest forwards guest connects to host ports that have no
	// Listen to the Unix socket "<Path>_<port>"; the guest gets RST when
	// nothing accepts there. False refuses them.
	ForwardGuest bool
	// HandshakeTimeout bounds reading the CONNECT line and writing the
	// answer. Zero means DefaultUnixTimeout.
	HandshakeTimeout time.Duration
	// DialTimeout bounds the guest's answer to a CONNECT and the connect
	// to a forwarding socket. Zero means DefaultUnixTimeout.
	DialTimeout time.Duration
}

// UnixProxy serves Firecracker's hybrid vsock protocol on a Unix socket so
// that other host processes reach guest ports, and optionally forwards
// guest connects to Unix sockets.
type UnixProxy struct {
	d   *Device
	cfg UnixConfig
}

// NewUnixProxy returns a proxy for d. It starts nothing; see Run.
func NewUnixProxy(d *Device, cfg UnixConfig) (*UnixProxy, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: unix proxy: empty path", ErrConfig)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultUnixTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultUnixTimeout
	}
	return &UnixProxy{d: d, cfg: cfg}, nil
}

// Run listens on the Unix socket and serves clients until ctx is done.
// Then it closes the socket and every proxied connection, waits for all of
// its goroutines to exit, and returns nil. It returns an error if it cannot
// listen or accept.
func (p *UnixProxy) Run(ctx context.Context) error {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.cfg.Path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("vsock: unix proxy: %w", err)
	}
	var fl *Listener
	if p.cfg.ForwardGuest {
		if fl, err = p.d.listenDeferred(); err != nil {
			ln.Close()
			return fmt.Errorf("vsock: unix proxy: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg sync.WaitGroup
		tr tracker
	)
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
		if fl != nil {
			fl.Close()
		}
		tr.closeAll()
	})
	if fl != nil {
		wg.Go(func() {
			for {
				c, err := fl.Accept()
				if err != nil {
					return
				}
				wg.Go(func() { p.forward(ctx, c.(*Conn), &tr) })
			}
		})
	}
	var runErr error
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() == nil {
				runErr = fmt.Errorf("vsock: unix proxy: %w", err)
			}
			break
		}
		wg.Go(func() { p.serve(ctx, uc, &tr) })
	}
	cancel()
	wg.Wait()
	return runErr
}

// serve handles one client of the Unix socket: the CONNECT line, the
// guest connect, the OK line, then bytes both ways.
func (p *UnixProxy) serve(ctx context.Context, uc *net.UnixConn, tr *tracker) {
	if !tr.add(uc) {
		uc.Close()
		return
	}
	defer tr.remove(uc)
	defer uc.Close()
	if err := uc.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout)); err != nil {
		return
	}
	port, err := readConnect(uc)
	if err != nil {
		return // malformed or slow: close, as Firecracker does
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	nc, err := p.d.Dial(dctx, port)
	cancel()
	if err != nil {
		return
	}
	vc := nc.(*Conn)
	if !tr.add(vc) {
		vc.Close()
		return
	}
	defer tr.remove(vc)
	defer vc.Close()
	if err := uc.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout)); err != nil {
		return
	}
	if _, err := fmt.Fprintf(uc, "OK %d\n", vc.key.local); err != nil {
		return
	}
	if err := uc.SetDeadline(time.Time{}); err != nil {
		return
	}
	splice(uc, vc)
}

// forward connects a guest connection to "<Path>_<port>" and answers the
// guest: RESPONSE if the connect worked, RST otherwise.
func (p *UnixProxy) forward(ctx context.Context, vc *Conn, tr *tracker) {
	if !tr.add(vc) {
		vc.Close()
		return
	}
	defer tr.remove(vc)
	defer vc.Close()
	dialer := net.Dialer{Timeout: p.cfg.DialTimeout}
	nc, err := dialer.DialContext(ctx, "unix", fmt.Sprintf("%s_%d", p.cfg.Path, vc.key.local))
	if err != nil {
		return // Close answers RST
	}
	uc := nc.(*net.UnixConn)
	if !tr.add(uc) {
		uc.Close()
		return
	}
	defer tr.remove(uc)
	defer uc.Close()
	if vc.acceptDeferred() != nil {
		return
	}
	splice(uc, vc)
}

// readConnect reads "CONNECT <port>\n" from r one byte at a time, so that
// bytes after the newline stay for the guest, and at most maxConnectLine
// bytes. The port is decimal, without sign or padding checks beyond
// strconv's.
func readConnect(r io.Reader) (uint32, error) {
	var buf [maxConnectLine]byte
	n := 0
	for {
		if n == len(buf) {
			return 0, errors.New("vsock: unix proxy: CONNECT line too long")
		}
		k, err := r.Read(buf[n : n+1])
		if err != nil {
			return 0, fmt.Errorf("vsock: unix proxy: reading CONNECT: %w", err)
		}
		n += k
		if k == 1 && buf[n-1] == '\n' {
			break
		}
	}
	return parseConnect(string(buf[:n-1]))
}

// parseConnect parses a CONNECT line without its newline.
func parseConnect(line string) (uint32, error) {
	arg, ok := strings.CutPrefix(line, "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("vsock: unix proxy: bad request %q", line)
	}
	port, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("vsock: unix proxy: bad port %q", arg)
	}
	return uint32(port), nil
}

// splice copies bytes both ways until both directions end. A direction
// that ends cleanly half-closes the other side; an error closes both,
// which ends the other direction too.
func splice(uc *net.UnixConn, vc *Conn) {
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := io.Copy(vc, uc); err != nil {
			vc.Close()
			uc.Close()
			return
		}
		vc.CloseWrite()
	})
	if _, err := io.Copy(uc, vc); err != nil {
		vc.Close()
		uc.Close()
	} else {
		uc.CloseWrite()
	}
	wg.Wait()
}

// tracker holds the connections a UnixProxy must close when it stops.
type tracker struct {
	mu     sync.Mutex // guards the fields below
	closed bool
	conns  map[io.Closer]struct{}
}

// add registers c; it reports false, without registering, after closeAll.
func (t *tracker) add(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[io.Closer]struct{})
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tracker) remove(c io.Closer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
}

// closeAll closes every registered connection, outside the lock.
func (t *tracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}
