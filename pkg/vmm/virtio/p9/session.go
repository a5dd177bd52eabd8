// SPDX-License-Identifier: Apache-2.0

package p9

import (
	"encoding/binary"
	"io"
	"net"
	"sync"

	"github.com/hugelgupf/p9/fsimpl/localfs"
	"github.com/hugelgupf/p9/p9"
)

// session is one 9P connection between the device and a server over its
// root: an in-memory stream (net.Pipe) whose far end the server reads
// requests from and writes replies to. It owns two goroutines: the
// server's connection handler (which starts one more per request in
// flight and waits for them before it returns) and the reader that
// completes chains from the replies.
type session struct {
	d    *Device
	conn net.Conn // the device's end
	wg   sync.WaitGroup
	once sync.Once
}

// startSession starts a server over root and the session's goroutines.
func startSession(d *Device, root string) *session {
	client, server := net.Pipe()
	s := &session{d: d, conn: client}
	srv := p9.NewServer(localfs.Attacher(root))
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		// Handle closes server when the stream ends and returns after
		// every request it started has been answered (or failed to be).
		_ = srv.Handle(server, server)
	}()
	go func() {
		defer s.wg.Done()
		s.read()
	}()
	return s
}

// send writes one request, head then the rest of its bytes from guest
// buffers, to the server. net.Pipe is synchronous: when send returns the
// server has read every byte, so the buffers may change afterwards.
func (s *session) send(head []byte, tail [][]byte) error {
	if _, err := s.conn.Write(head); err != nil {
		return err
	}
	for _, b := range tail {
		if len(b) == 0 {
			continue
		}
		if _, err := s.conn.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// read takes framed replies off the stream and hands each to the device
// until the stream ends. The server is ours, but its sizes are still
// checked: a reply shorter than a header or longer than MaxMessageSize
// ends the session.
func (s *session) read() {
	buf := make([]byte, MaxMessageSize)
	for {
		if _, err := io.ReadFull(s.conn, buf[:headerSize]); err != nil {
			break
		}
		size := binary.LittleEndian.Uint32(buf)
		if size < headerSize || size > MaxMessageSize {
			break
		}
		if _, err := io.ReadFull(s.conn, buf[headerSize:size]); err != nil {
			break
		}
		s.d.complete(s, buf[:size])
	}
	s.conn.Close()
	s.d.sessionEnded(s)
}

// stop ends the session and waits for its goroutines. The caller must not
// hold d.mu: the reader may be waiting for it.
func (s *session) stop() {
	s.once.Do(func() {
		s.conn.Close()
		s.wg.Wait()
	})
}
