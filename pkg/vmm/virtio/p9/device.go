// SPDX-License-Identifier: Apache-2.0

package p9

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/memory"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// DeviceType is the virtio device ID of a 9P transport (virtio 1.2 §5,
// table "Device Types": 9).
const DeviceType virtio.DeviceType = 9

// FeatureMountTag is VIRTIO_9P_MOUNT_TAG (Linux
// include/uapi/linux/virtio_9p.h): the configuration space holds the mount
// tag. Linux's 9p transport refuses a device without it.
const FeatureMountTag uint64 = 1 << 0

// Sizes the device offers and enforces.
const (
	// QueueSize is the largest request queue the driver may choose.
	QueueSize = 1024
	// MaxTagBytes bounds Config.Tag. The field is a u16 length, but a
	// mount tag is a short name.
	MaxTagBytes = 255
	// MaxMessageSize bounds every 9P message either way, whatever msize
	// the guest asks for in Tversion: the device lowers a larger request
	// before the server sees it. Linux's virtio transport caps msize at
	// about 500 KiB (PAGE_SIZE * (VIRTQUEUE_NUM - 3), net/9p/trans_virtio.c).
	MaxMessageSize = 1 << 20
)

// maxChainsPerNotify bounds the chains one QueueNotify forwards, as in
// package blk: a guest that refills the queue as fast as it is served
// cannot hold a vCPU in the device forever.
const maxChainsPerNotify = 4 * QueueSize

// 9P wire format (9P2000 intro(5); 9P2000.L adds message types only):
//
//	size[4] type[1] tag[2] body...
//
// little-endian, size counting the whole message. Tversion and Rversion
// carry msize[4] version[s] as their body.
const (
	headerSize   = 7
	typeTversion = 100
	typeRversion = 101
	// headSize is how much of a request the device copies before
	// forwarding it (the rest, a Twrite payload, streams from guest
	// buffers): enough for every fixed part, and for Tversion's msize.
	headSize = 4096
)

// Config configures a virtio-9p device.
type Config struct {
	// Tag is the mount tag the guest names (mount -t 9p TAG dir): 1 to
	// MaxTagBytes bytes, no NUL.
	Tag string
	// Root is the host directory served to the guest. It must exist.
	// The guest can reach whatever the host's path rules let it reach
	// from there (symbolic links are followed): see the package doc.
	Root string
}

// Device is a virtio 9P transport (virtio device ID 9) that forwards each
// message to a 9P2000.L server over an in-process stream.
type Device struct {
	m      Metrics
	config []byte
	root   string

	mu      sync.Mutex    // guards the fields below
	closed  bool          // Close was called
	queue   *virtio.Queue // nil before Activate and after Reset
	irq     virtio.Interrupt
	sess    *session                 // the 9P connection; nil when not active
	pending map[uint16]*virtio.Chain // forwarded requests by tag
	msize   uint32                   // bound on messages: MaxMessageSize, or the negotiated msize
	head    []byte                   // copy of the start of the request being forwarded
	broken  bool                     // the session ended under the device: NEEDS_RESET was signalled
}

var _ virtio.Device = (*Device)(nil)

// New returns a device in its reset state. It checks the configuration but
// starts nothing: the 9P server and its goroutines start on Activate.
func New(cfg Config) (*Device, error) {
	if cfg.Tag == "" || len(cfg.Tag) > MaxTagBytes || strings.IndexByte(cfg.Tag, 0) >= 0 {
		return nil, fmt.Errorf("%w: tag %q must be 1 to %d bytes without NUL", ErrConfig, cfg.Tag, MaxTagBytes)
	}
	fi, err := os.Stat(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("%w: root: %w", ErrConfig, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: root %s is not a directory", ErrConfig, cfg.Root)
	}
	// Configuration space (Linux struct virtio_9p_config): tag_len u16
	// little-endian, then the tag bytes.
	c := binary.LittleEndian.AppendUint16(nil, uint16(len(cfg.Tag)))
	c = append(c, cfg.Tag...)
	return &Device{config: c, root: cfg.Root, msize: MaxMessageSize}, nil
}

// Metrics returns the device's counters.
func (d *Device) Metrics() *Metrics { return &d.m }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return DeviceType }

// Features implements virtio.Device: the mount tag and the split-queue
// features of package virtio.
func (d *Device) Features() uint64 { return FeatureMountTag | virtio.QueueFeatures }

// QueueMaxSizes implements virtio.Device: one request queue.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device. The space never changes.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	if offset < uint64(len(d.config)) {
		copy(data, d.config[offset:])
	}
}

// WriteConfig implements virtio.Device: every field is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device. It starts a 9P session: a server over
// Config.Root and the goroutines of the package doc.
func (d *Device) Activate(_ *memory.Memory, queues []*virtio.Queue, irq virtio.Interrupt, _ uint64) error {
	if len(queues) != 1 || queues[0] == nil || irq == nil {
		return ErrNoQueue
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.sess != nil {
		// The transport resets before activating again; this is a
		// programmer error, but ending the old session is safe.
		old := d.sess
		d.sess = nil
		d.mu.Unlock()
		old.stop()
		d.mu.Lock()
	}
	d.queue, d.irq = queues[0], irq
	d.pending = make(map[uint16]*virtio.Chain)
	d.msize = MaxMessageSize
	d.broken = false
	d.sess = startSession(d, d.root)
	return nil
}

// Reset implements virtio.Device. Once it returns the 9P session has ended
// (every fid the guest held is clunked, every host file closed), its
// goroutines have exited, pending requests are forgotten, and the device
// no longer touches guest memory.
func (d *Device) Reset() {
	d.mu.Lock()
	s := d.detach()
	d.mu.Unlock()
	if s != nil {
		s.stop()
	}
}

// detach drops the queue, the pending chains and the session, which it
// returns for the caller to stop once d.mu is released (the session's
// reader takes d.mu). The caller holds d.mu.
func (d *Device) detach() *session {
	s := d.sess
	d.sess, d.queue, d.irq, d.pending = nil, nil, nil, nil
	return s
}

// Close stops the device: it ends the session as Reset does. It is
// idempotent and safe from any goroutine.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	s := d.detach()
	d.head = nil
	d.mu.Unlock()
	if s != nil {
		s.stop()
	}
	return nil
}

// QueueNotify implements virtio.Device. It forwards every available
// request to the 9P server on the caller's goroutine; replies complete
// their chains later, from the session's reader, in whatever order the
// server answers.
func (d *Device) QueueNotify(index int) {
	irq, signal, broken := d.forwardAll(index)
	// Signal outside the lock; after a reset irq is stale and its
	// signals do nothing.
	if broken {
		irq.SignalNeedsReset()
	}
	if signal {
		irq.SignalUsedBuffer()
	}
}

func (d *Device) forwardAll(index int) (irq virtio.Interrupt, signal, broken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.queue == nil || index != 0 || d.broken {
		return nil, false, false
	}
	q := d.queue
	for served := 0; ; served++ {
		if served == maxChainsPerNotify {
			d.m.Overruns.Add(1)
			break
		}
		c, err := q.Pop()
		if err != nil {
			var qe *virtio.QueueError
			if errors.Is(err, virtio.ErrQueueBroken) || !errors.As(err, &qe) || q.Push(qe.Head, 0) != nil {
				d.m.QueueBroken.Add(1)
				d.broken = true
				return d.irq, false, true
			}
			d.m.BadChains.Add(1)
			continue
		}
		if c == nil {
			break
		}
		if err := d.forward(c); err != nil {
			if q.Push(c.Head, 0) != nil {
				d.m.QueueBroken.Add(1)
				d.broken = true
				return d.irq, false, true
			}
			if errors.Is(err, errSession) {
				d.m.QueueBroken.Add(1)
				d.broken = true
				return d.irq, q.NeedsInterrupt(), true
			}
		}
	}
	return d.irq, q.NeedsInterrupt(), false
}

var (
	errBadRequest = errors.New("p9: bad request")
	errSession    = errors.New("p9: session ended")
)

// forward reads one 9P message from c's readable buffers (guest input),
// checks it and writes it to the server; c stays pending under its tag
// until the reply comes. Checks: the size field is at least a header, at
// most the negotiated msize and within the readable part (bytes after it
// are ignored); the chain has room for at least a header in reply; no
// other request with the tag is pending. The header and the fixed part of
// the message are copied before they are checked, so what the device
// checks is what the server reads; a Tversion's msize is lowered to
// MaxMessageSize. On an error the caller returns c unused. The caller
// holds d.mu.
func (d *Device) forward(c *virtio.Chain) error {
	if d.head == nil {
		d.head = make([]byte, headSize)
	}
	n := min(c.ReadableLen(), headSize)
	k, _ := readFull(c, d.head[:n])
	h := d.head[:k]
	if len(h) < headerSize || c.WritableLen() < headerSize {
		d.m.BadRequests.Add(1)
		return errBadRequest
	}
	size := binary.LittleEndian.Uint32(h)
	typ := h[4]
	tag := binary.LittleEndian.Uint16(h[5:])
	if size < headerSize || uint64(size) > c.ReadableLen() || size > d.msize {
		d.m.BadRequests.Add(1)
		return errBadRequest
	}
	if _, dup := d.pending[tag]; dup {
		d.m.DuplicateTags.Add(1)
		return errBadRequest
	}
	h = h[:min(uint32(len(h)), size)]
	if typ == typeTversion && size >= headerSize+4 {
		if binary.LittleEndian.Uint32(h[headerSize:]) > MaxMessageSize {
			binary.LittleEndian.PutUint32(h[headerSize:], MaxMessageSize)
		}
	}
	tail := limit(skip(c.Readable(), len(h)), int(size)-len(h))
	if err := d.sess.send(h, tail); err != nil {
		return errSession
	}
	d.m.Requests.Add(1)
	d.pending[tag] = c
	return nil
}

// complete delivers one reply from session s (the server's bytes, already
// checked to be a whole message) to the chain pending under its tag, and
// signals the driver. It drops replies of a stale session and replies no
// request waits for.
func (d *Device) complete(s *session, msg []byte) {
	irq, signal, broken := d.deliver(s, msg)
	if broken {
		irq.SignalNeedsReset()
	}
	if signal {
		irq.SignalUsedBuffer()
	}
}

func (d *Device) deliver(s *session, msg []byte) (irq virtio.Interrupt, signal, broken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess != s || d.queue == nil {
		return nil, false, false
	}
	tag := binary.LittleEndian.Uint16(msg[5:])
	c, ok := d.pending[tag]
	if !ok {
		d.m.UnknownTags.Add(1)
		return nil, false, false
	}
	delete(d.pending, tag)
	if msg[4] == typeRversion && len(msg) >= headerSize+4 {
		if m := binary.LittleEndian.Uint32(msg[headerSize:]); m >= headerSize {
			d.msize = min(m, MaxMessageSize)
		}
	}
	var n uint32
	if uint64(len(msg)) > c.WritableLen() || uint32(len(msg)) > d.msize {
		d.m.Oversize.Add(1)
	} else {
		c.Write(msg) // fits: checked above
		n = c.Written()
		d.m.Replies.Add(1)
	}
	if d.queue.Push(c.Head, n) != nil {
		d.m.QueueBroken.Add(1)
		d.broken = true
		return d.irq, false, true
	}
	return d.irq, d.queue.NeedsInterrupt(), false
}

// sessionEnded is called by the reader of session s when the server's
// stream ended. If s is still current the guest's pending requests will
// never be answered, so the device asks for a reset.
func (d *Device) sessionEnded(s *session) {
	d.mu.Lock()
	if d.sess != s || d.queue == nil || d.broken {
		d.mu.Unlock()
		return
	}
	d.broken = true
	d.m.QueueBroken.Add(1)
	irq := d.irq
	d.mu.Unlock()
	irq.SignalNeedsReset()
}

// readFull reads len(p) bytes from c's readable buffers, or as many as
// there are.
func readFull(c *virtio.Chain, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := c.Read(p[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// skip returns bufs without their first n bytes, leaving bufs unchanged.
func skip(bufs [][]byte, n int) [][]byte {
	for i, b := range bufs {
		if n < len(b) {
			out := make([][]byte, 0, len(bufs)-i)
			out = append(out, b[n:])
			return append(out, bufs[i+1:]...)
		}
		n -= len(b)
	}
	return nil
}

// limit returns the first n bytes of bufs (which hold at least n), as a
// new slice of buffers.
func limit(bufs [][]byte, n int) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n == 0 {
			break
		}
		b = b[:min(len(b), n)]
		out = append(out, b)
		n -= len(b)
	}
	return out
}
