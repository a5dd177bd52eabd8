// SPDX-License-Identifier: Apache-2.0

package virtio

import (
	"io"
	"math"
)

// Chain is one descriptor chain popped from a [Queue]: the device-readable
// buffers followed by the device-writable ones (§2.7.4.2). Pop has already
// checked every descriptor (see Queue.Pop); the buffers alias guest RAM.
//
// The guest can change buffer contents at any time, so a device copies what
// it validates (a request header, say) before acting on it, and never reads
// a readable buffer twice expecting the same bytes.
//
// Chain implements io.Reader over the readable buffers and io.Writer over the
// writable ones; each keeps its own position.
type Chain struct {
	// Head is the index of the chain's first descriptor, the id to Push.
	Head uint16

	readable    [][]byte
	writable    [][]byte
	readableLen uint64
	writableLen uint64

	rBuf, rOff int    // read position: buffer index and offset in it
	wBuf, wOff int    // write position
	written    uint64 // bytes written through Write
}

// Readable returns the device-readable buffers in order. Empty buffers
// (zero-length descriptors) appear as nil entries.
func (c *Chain) Readable() [][]byte { return c.readable }

// Writable returns the device-writable buffers in order, for devices that
// fill them directly (vectored reads). Such a device reports the byte count
// to Push itself.
func (c *Chain) Writable() [][]byte { return c.writable }

// ReadableLen returns the total length of the readable buffers.
func (c *Chain) ReadableLen() uint64 { return c.readableLen }

// WritableLen returns the total length of the writable buffers.
func (c *Chain) WritableLen() uint64 { return c.writableLen }

// Read implements io.Reader over the readable buffers. It returns io.EOF
// after the last one.
func (c *Chain) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && c.rBuf < len(c.readable) {
		b := c.readable[c.rBuf][c.rOff:]
		k := copy(p[n:], b)
		n += k
		c.rOff += k
		if c.rOff == len(c.readable[c.rBuf]) {
			c.rBuf++
			c.rOff = 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Remaining returns the number of readable bytes not yet consumed by Read.
func (c *Chain) Remaining() uint64 {
	var n uint64
	for i := c.rBuf; i < len(c.readable); i++ {
		n += uint64(len(c.readable[i]))
	}
	return n - uint64(c.rOff)
}

// Write implements io.Writer over the writable buffers. When they are full
// it writes what fits and returns ErrChainFull.
func (c *Chain) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && c.wBuf < len(c.writable) {
		b := c.writable[c.wBuf][c.wOff:]
		k := copy(b, p[n:])
		n += k
		c.wOff += k
		if c.wOff == len(c.writable[c.wBuf]) {
			c.wBuf++
			c.wOff = 0
		}
	}
	c.written += uint64(n)
	if n < len(p) {
		return n, ErrChainFull
	}
	return n, nil
}

// Available returns the number of writable bytes not yet filled by Write.
func (c *Chain) Available() uint64 { return c.writableLen - c.written }

// Written returns the number of bytes written through Write, the length to
// Push. The used ring's length field is 32 bits (§2.7.8), so the result
// saturates at math.MaxUint32.
func (c *Chain) Written() uint32 {
	if c.written > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(c.written)
}
