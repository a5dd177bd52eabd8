// SPDX-License-Identifier: Apache-2.0

package guestagent

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// Frame sizes. Sizes count the protobuf bytes, not the 4-byte length prefix.
const (
	// HeaderSize is the size of the big-endian length prefix.
	HeaderSize = 4
	// MinFrameSize is the smallest maximum frame size a peer may
	// advertise: it must hold a full Data chunk plus its envelope.
	MinFrameSize = 128 << 10
	// DefaultMaxFrameSize is the maximum frame size used when a Config
	// leaves it zero.
	DefaultMaxFrameSize = 1 << 20
	// MaxFrameSizeLimit is the largest maximum frame size a side may
	// configure; larger values are clamped.
	MaxFrameSizeLimit = 16 << 20
	// DataChunk is the largest payload of one Data frame.
	DataChunk = 64 << 10
)

// ClampFrameSize returns n bounded to [MinFrameSize, MaxFrameSizeLimit],
// with zero meaning DefaultMaxFrameSize.
func ClampFrameSize(n uint32) uint32 {
	switch {
	case n == 0:
		return DefaultMaxFrameSize
	case n < MinFrameSize:
		return MinFrameSize
	case n > MaxFrameSizeLimit:
		return MaxFrameSizeLimit
	}
	return n
}

// FrameReader decodes frames from a byte stream. It is for one goroutine.
type FrameReader struct {
	r   *bufio.Reader
	max uint32
	hdr [HeaderSize]byte
	buf []byte
}

// NewFrameReader returns a reader that accepts frames of at most maxSize
// bytes (clamped with ClampFrameSize).
func NewFrameReader(r io.Reader, maxSize uint32) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10), max: ClampFrameSize(maxSize)}
}

// MaxFrameSize returns the largest frame the reader accepts.
func (fr *FrameReader) MaxFrameSize() uint32 { return fr.max }

// ReadFrame reads and decodes the next frame. Its input is peer-controlled:
// the length is checked against the maximum before any allocation, a zero
// length, a body that is not an agentpb.Frame, and a frame without a message
// are errors matching ErrProtocol. At a clean end of stream between frames it
// returns io.EOF; a stream cut inside a frame gives io.ErrUnexpectedEOF.
func (fr *FrameReader) ReadFrame() (*agentpb.Frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[:])
	if n == 0 {
		return nil, protocolErrorf(nil, "empty frame")
	}
	if n > fr.max {
		return nil, protocolErrorf(ErrFrameTooLarge, "frame of %d bytes exceeds the maximum of %d", n, fr.max)
	}
	if uint32(cap(fr.buf)) < n {
		fr.buf = make([]byte, n)
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	f := new(agentpb.Frame)
	// Unmarshal copies bytes fields, so fr.buf can be reused.
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, protocolErrorf(nil, "undecodable frame: %v", err)
	}
	if f.Msg == nil {
		return nil, protocolErrorf(nil, "frame on stream %d carries no known message", f.GetStream())
	}
	return f, nil
}

// FrameWriter encodes frames onto a byte stream. It is safe for concurrent
// use: frames are written whole, one at a time. After a write error every
// later write fails with that error.
type FrameWriter struct {
	sem chan struct{} // one token: held while writing; guards w and err
	w   io.Writer
	err error
	max atomic.Uint32
}

// NewFrameWriter returns a writer that refuses frames larger than maxSize
// (clamped with ClampFrameSize); SetMaxFrameSize lowers it to what the peer
// advertised.
func NewFrameWriter(w io.Writer, maxSize uint32) *FrameWriter {
	fw := &FrameWriter{sem: make(chan struct{}, 1), w: w}
	fw.max.Store(ClampFrameSize(maxSize))
	return fw
}

// SetMaxFrameSize sets the largest frame the peer accepts.
func (fw *FrameWriter) SetMaxFrameSize(n uint32) { fw.max.Store(ClampFrameSize(n)) }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, DataChunk+256); return &b }}

// WriteFrame encodes f and writes it. ctx bounds the wait for other writers;
// a write in progress is not interrupted (closing the connection does that).
// A frame larger than the peer's maximum gives an error matching
// ErrFrameTooLarge and writes nothing.
func (fw *FrameWriter) WriteFrame(ctx context.Context, f *agentpb.Frame) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b := append((*bp)[:0], 0, 0, 0, 0)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, f)
	if err != nil {
		return fmt.Errorf("guestagent: encode frame: %w", err)
	}
	*bp = b
	n := len(b) - HeaderSize
	if max := fw.max.Load(); uint64(n) > uint64(max) {
		return fmt.Errorf("%w: %d bytes, the peer accepts %d", ErrFrameTooLarge, n, max)
	}
	binary.BigEndian.PutUint32(b, uint32(n))
	select {
	case fw.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-fw.sem }()
	if fw.err != nil {
		return fw.err
	}
	if _, err := fw.w.Write(b); err != nil {
		fw.err = fmt.Errorf("guestagent: write frame: %w", err)
		return fw.err
	}
	return nil
}

// IsTerminal reports whether f ends its stream (sent by the guest).
func IsTerminal(f *agentpb.Frame) bool {
	switch f.Msg.(type) {
	case *agentpb.Frame_Exit, *agentpb.Frame_Error, *agentpb.Frame_FsResult, *agentpb.Frame_Metrics, *agentpb.Frame_ShutdownAccepted:
		return true
	}
	return false
}

// FlowCost returns how many bytes of window f consumes: the payload of Data,
// the encoded size of FsEntries, zero for everything else.
func FlowCost(f *agentpb.Frame) int {
	switch m := f.Msg.(type) {
	case *agentpb.Frame_Data:
		return len(m.Data.GetData())
	case *agentpb.Frame_Entries:
		return proto.Size(m.Entries)
	}
	return 0
}
