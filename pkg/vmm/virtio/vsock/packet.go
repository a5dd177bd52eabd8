// SPDX-License-Identifier: Apache-2.0

package vsock

import (
	"encoding/binary"
	"fmt"
)

// Packet header layout, struct virtio_vsock_hdr (virtio 1.2 §5.10.6), all
// fields little-endian:
//
//	 0 src_cid   u64 | 8 dst_cid  u64
//	16 src_port  u32 | 20 dst_port u32 | 24 len u32
//	28 type      u16 | 30 op       u16
//	32 flags     u32 | 36 buf_alloc u32 | 40 fwd_cnt u32
//
// The header is followed by len bytes of payload (only for OpRW).
const HeaderSize = 44

// Header field offsets (virtio 1.2 §5.10.6).
const (
	offSrcCID   = 0
	offDstCID   = 8
	offSrcPort  = 16
	offDstPort  = 20
	offLen      = 24
	offType     = 28
	offOp       = 30
	offFlags    = 32
	offBufAlloc = 36
	offFwdCnt   = 40
)

// HostCID is the context ID of the host (VMADDR_CID_HOST, virtio 1.2
// §5.10.4: "the host ... CID 2").
const HostCID = 2

// Socket types (virtio 1.2 §5.10.6, the type field).
const (
	// TypeStream is VIRTIO_VSOCK_TYPE_STREAM, the only type implemented.
	TypeStream uint16 = 1
	// TypeSeqpacket is VIRTIO_VSOCK_TYPE_SEQPACKET; never offered, and
	// answered with RST.
	TypeSeqpacket uint16 = 2
)

// Op is a packet operation (virtio 1.2 §5.10.6, the op field).
type Op uint16

// Operations (virtio 1.2 §5.10.6).
const (
	OpInvalid       Op = 0 // VIRTIO_VSOCK_OP_INVALID
	OpRequest       Op = 1 // VIRTIO_VSOCK_OP_REQUEST: connect
	OpResponse      Op = 2 // VIRTIO_VSOCK_OP_RESPONSE: connection accepted
	OpRST           Op = 3 // VIRTIO_VSOCK_OP_RST: refuse or abort
	OpShutdown      Op = 4 // VIRTIO_VSOCK_OP_SHUTDOWN: flags say which direction
	OpRW            Op = 5 // VIRTIO_VSOCK_OP_RW: payload follows the header
	OpCreditUpdate  Op = 6 // VIRTIO_VSOCK_OP_CREDIT_UPDATE: buf_alloc/fwd_cnt changed
	OpCreditRequest Op = 7 // VIRTIO_VSOCK_OP_CREDIT_REQUEST: please send CREDIT_UPDATE
)

var opNames = [...]string{"INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN", "RW", "CREDIT_UPDATE", "CREDIT_REQUEST"}

// String returns the operation's name without the VIRTIO_VSOCK_OP_ prefix.
func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint16(o))
}

// Shutdown flags of OpShutdown (virtio 1.2 §5.10.6.5).
const (
	// ShutdownRecv is VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE: the sender will
	// receive no more data.
	ShutdownRecv uint32 = 1
	// ShutdownSend is VIRTIO_VSOCK_SHUTDOWN_F_SEND: the sender will send no
	// more data.
	ShutdownSend uint32 = 2
	// shutdownBoth is both directions, what a close sends.
	shutdownBoth = ShutdownRecv | ShutdownSend
)

// Header is a virtio-vsock packet header backed by a byte slice of at least
// HeaderSize bytes; the accessors panic on a shorter slice, like indexing
// would. A Header built over guest memory reads bytes the guest may change:
// copy it first (see [NewHeader]) before validating fields.
type Header []byte

// NewHeader returns a zeroed header in a fresh HeaderSize-byte slice.
func NewHeader() Header { return make(Header, HeaderSize) }

// SrcCID returns the source context ID.
func (h Header) SrcCID() uint64 { return binary.LittleEndian.Uint64(h[offSrcCID:]) }

// DstCID returns the destination context ID.
func (h Header) DstCID() uint64 { return binary.LittleEndian.Uint64(h[offDstCID:]) }

// SrcPort returns the source port.
func (h Header) SrcPort() uint32 { return binary.LittleEndian.Uint32(h[offSrcPort:]) }

// DstPort returns the destination port.
func (h Header) DstPort() uint32 { return binary.LittleEndian.Uint32(h[offDstPort:]) }

// Len returns the payload length that follows the header.
func (h Header) Len() uint32 { return binary.LittleEndian.Uint32(h[offLen:]) }

// Type returns the socket type (TypeStream).
func (h Header) Type() uint16 { return binary.LittleEndian.Uint16(h[offType:]) }

// Op returns the operation.
func (h Header) Op() Op { return Op(binary.LittleEndian.Uint16(h[offOp:])) }

// Flags returns the operation flags (ShutdownRecv, ShutdownSend).
func (h Header) Flags() uint32 { return binary.LittleEndian.Uint32(h[offFlags:]) }

// BufAlloc returns the sender's receive buffer size for this connection.
func (h Header) BufAlloc() uint32 { return binary.LittleEndian.Uint32(h[offBufAlloc:]) }

// FwdCnt returns the number of bytes the sender has consumed from its
// receive buffer since the connection began (a free-running counter).
func (h Header) FwdCnt() uint32 { return binary.LittleEndian.Uint32(h[offFwdCnt:]) }

// SetSrcCID sets the source context ID.
func (h Header) SetSrcCID(v uint64) { binary.LittleEndian.PutUint64(h[offSrcCID:], v) }

// SetDstCID sets the destination context ID.
func (h Header) SetDstCID(v uint64) { binary.LittleEndian.PutUint64(h[offDstCID:], v) }

// SetSrcPort sets the source port.
func (h Header) SetSrcPort(v uint32) { binary.LittleEndian.PutUint32(h[offSrcPort:], v) }

// SetDstPort sets the destination port.
func (h Header) SetDstPort(v uint32) { binary.LittleEndian.PutUint32(h[offDstPort:], v) }

// SetLen sets the payload length.
func (h Header) SetLen(v uint32) { binary.LittleEndian.PutUint32(h[offLen:], v) }

// SetType sets the socket type.
func (h Header) SetType(v uint16) { binary.LittleEndian.PutUint16(h[offType:], v) }

// SetOp sets the operation.
func (h Header) SetOp(v Op) { binary.LittleEndian.PutUint16(h[offOp:], uint16(v)) }

// SetFlags sets the operation flags.
func (h Header) SetFlags(v uint32) { binary.LittleEndian.PutUint32(h[offFlags:], v) }

// SetBufAlloc sets the sender's receive buffer size.
func (h Header) SetBufAlloc(v uint32) { binary.LittleEndian.PutUint32(h[offBufAlloc:], v) }

// SetFwdCnt sets the sender's forwarded byte count.
func (h Header) SetFwdCnt(v uint32) { binary.LittleEndian.PutUint32(h[offFwdCnt:], v) }

// String describes the header, for logs and test failures.
func (h Header) String() string {
	if len(h) < HeaderSize {
		return fmt.Sprintf("vsock header (short: %d bytes)", len(h))
	}
	return fmt.Sprintf("%s %d:%d -> %d:%d type %d len %d flags %#x buf_alloc %d fwd_cnt %d",
		h.Op(), h.SrcCID(), h.SrcPort(), h.DstCID(), h.DstPort(), h.Type(), h.Len(), h.Flags(), h.BufAlloc(), h.FwdCnt())
}
