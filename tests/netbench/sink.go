// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The wire protocol of guestinit's net check: a connection's first byte
// says what it is. A bulk connection sends bulkMarker and then the
// payload; the sink answers with the payload length (8 bytes, big endian)
// once it has read all of it. An echo connection sends echoMarker and
// reads it back.
const (
	bulkMarker = 'B'
	echoMarker = 'E'
)

// connTimeout bounds each connection the sink serves.
const connTimeout = 5 * time.Minute

// maxConns bounds the connections the sink serves at once; the guest
// makes one at a time, so more means a misbehaving guest.
const maxConns = 64

// sink serves the guest's connections on the host's loopback: it counts
// one bulk payload of a fixed size and echoes single bytes. Its accept
// loop and one goroutine per connection are started by newSink; Close
// ends them (closing the listener and every open connection) and waits.
type sink struct {
	ln       net.Listener
	bulkSize int64
	slots    chan struct{}
	wg       sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	conns  map[net.Conn]struct{}
	closed bool
	result sinkResult
}

// sinkResult is what the sink saw during one run, on the host's clock.
type sinkResult struct {
	bulkBytes int64         // payload bytes of the last complete bulk connection
	bulkTime  time.Duration // from its first payload byte to the ack
	echoes    int           // echo connections answered
	errs      []error
}

func newSink(bulkSize int64) (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, bulkSize: bulkSize, slots: make(chan struct{}, maxConns), conns: map[net.Conn]struct{}{}}
	s.wg.Go(s.accept)
	return s, nil
}

func (s *sink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// take returns what the sink saw since the last take and starts afresh.
func (s *sink) take() sinkResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.result
	s.result = sinkResult{}
	return r
}

func (s *sink) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// track adds c to the open connections, or closes it and returns false
// when the sink is closed.
func (s *sink) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *sink) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	c.Close()
}

func (s *sink) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		select {
		case s.slots <- struct{}{}:
		default:
			c.Close()
			s.fail(errors.New("too many connections at once"))
			continue
		}
		if !s.track(c) {
			<-s.slots
			return
		}
		s.wg.Go(func() {
			defer func() { <-s.slots }()
			defer s.untrack(c)
			if err := s.serve(c); err != nil {
				s.fail(err)
			}
		})
	}
}

// fail records err, unless the sink's Close caused it.
func (s *sink) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed && len(s.result.errs) < 10 {
		s.result.errs = append(s.result.errs, err)
	}
}

func (s *sink) serve(c net.Conn) error {
	c.SetDeadline(time.Now().Add(connTimeout))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("first byte: %w", err)
	}
	switch b[0] {
	case echoMarker:
		if _, err := c.Write(b[:]); err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		// The guest closes first (its socket keeps TIME_WAIT); wait
		// for that, bounded by the deadline.
		io.Copy(io.Discard, io.LimitReader(c, 1))
		s.mu.Lock()
		s.result.echoes++
		s.mu.Unlock()
		return nil
	case bulkMarker:
		return s.bulk(c)
	}
	return fmt.Errorf("unknown connection kind %#x", b[0])
}

// bulk reads exactly bulkSize bytes and acknowledges them.
func (s *sink) bulk(c net.Conn) error {
	buf := make([]byte, 256<<10)
	var start time.Time
	var n int64
	for n < s.bulkSize {
		m, err := c.Read(buf[:min(int64(len(buf)), s.bulkSize-n)])
		if n == 0 && m > 0 {
			start = time.Now()
		}
		n += int64(m)
		if err != nil {
			return fmt.Errorf("bulk after %d bytes: %w", n, err)
		}
	}
	var ack [8]byte
	binary.BigEndian.PutUint64(ack[:], uint64(n))
	if _, err := c.Write(ack[:]); err != nil {
		return fmt.Errorf("bulk ack: %w", err)
	}
	d := time.Since(start)
	s.mu.Lock()
	s.result.bulkBytes, s.result.bulkTime = n, d
	s.mu.Unlock()
	return nil
}
