// SPDX-License-Identifier: Apache-2.0

package netdev

import "encoding/binary"

// Every buffer on the rx and tx queues starts with a virtio_net_hdr
// (virtio 1.2 §5.1.6). With VIRTIO_F_VERSION_1 it always includes
// num_buffers, so it is 12 bytes whether or not VIRTIO_NET_F_MRG_RXBUF is
// negotiated (§5.1.6; only the legacy interface had a 10-byte header
// without it, and Linux's virtio_net uses 12 bytes whenever VERSION_1 is
// set):
//
//	+0  flags       u8    HeaderNeedsCsum | HeaderDataValid | HeaderRSCInfo
//	+1  gso_type    u8    GSONone, GSOTCPv4, ... | GSOECN
//	+2  hdr_len     le16
//	+4  gso_size    le16
//	+6  csum_start  le16
//	+8  csum_offset le16
//	+10 num_buffers le16  1 without VIRTIO_NET_F_MRG_RXBUF (§5.1.6.4.1)
//	+12 Ethernet frame (destination MAC first, no FCS)
//
// The header may span descriptors, and the frame may start in the same
// descriptor as the header or in a later one (§2.6.4: no framing).

// HeaderSize is the size of struct virtio_net_hdr with num_buffers, the
// header a VERSION_1 device and driver always use (§5.1.6).
const HeaderSize = 12

// Header flags (virtio 1.2 §5.1.6, virtio_net_hdr.flags).
const (
	// HeaderNeedsCsum is VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum at
	// csum_start+csum_offset is partial. Only valid with VIRTIO_NET_F_CSUM
	// (tx) or VIRTIO_NET_F_GUEST_CSUM (rx), neither of which this device
	// offers.
	HeaderNeedsCsum uint8 = 1
	// HeaderDataValid is VIRTIO_NET_HDR_F_DATA_VALID (rx only).
	HeaderDataValid uint8 = 2
	// HeaderRSCInfo is VIRTIO_NET_HDR_F_RSC_INFO (rx only).
	HeaderRSCInfo uint8 = 4
)

// GSO types (virtio 1.2 §5.1.6, virtio_net_hdr.gso_type). Only GSONone is
// valid here: no segmentation offload is offered.
const (
	GSONone  uint8 = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 uint8 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   uint8 = 3    // VIRTIO_NET_HDR_GSO_UDP
	GSOTCPv6 uint8 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOUDPL4 uint8 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4
	GSOECN   uint8 = 0x80 // VIRTIO_NET_HDR_GSO_ECN, ORed into the type
)

// Header is a virtio_net_hdr in wire format, HeaderSize bytes, with
// little-endian fields. Its accessors panic on a Header shorter than
// HeaderSize, so the device only builds one over a copied, full-length
// header.
type Header []byte

// NewHeader returns a zeroed header with num_buffers 1, as the device
// prefixes every received frame (§5.1.6.4.1: no offloads, no merged
// buffers).
func NewHeader() Header {
	h := make(Header, HeaderSize)
	h.SetNumBuffers(1)
	return h
}

// Flags returns the flags byte.
func (h Header) Flags() uint8 { return h[0] }

// SetFlags sets the flags byte.
func (h Header) SetFlags(f uint8) { h[0] = f }

// GSOType returns the gso_type byte, ECN bit included.
func (h Header) GSOType() uint8 { return h[1] }

// SetGSOType sets the gso_type byte.
func (h Header) SetGSOType(t uint8) { h[1] = t }

// HdrLen returns hdr_len.
func (h Header) HdrLen() uint16 { return binary.LittleEndian.Uint16(h[2:]) }

// SetHdrLen sets hdr_len.
func (h Header) SetHdrLen(v uint16) { binary.LittleEndian.PutUint16(h[2:], v) }

// GSOSize returns gso_size.
func (h Header) GSOSize() uint16 { return binary.LittleEndian.Uint16(h[4:]) }

// SetGSOSize sets gso_size.
func (h Header) SetGSOSize(v uint16) { binary.LittleEndian.PutUint16(h[4:], v) }

// CsumStart returns csum_start.
func (h Header) CsumStart() uint16 { return binary.LittleEndian.Uint16(h[6:]) }

// SetCsumStart sets csum_start.
func (h Header) SetCsumStart(v uint16) { binary.LittleEndian.PutUint16(h[6:], v) }

// CsumOffset returns csum_offset.
func (h Header) CsumOffset() uint16 { return binary.LittleEndian.Uint16(h[8:]) }

// SetCsumOffset sets csum_offset.
func (h Header) SetCsumOffset(v uint16) { binary.LittleEndian.PutUint16(h[8:], v) }

// NumBuffers returns num_buffers.
func (h Header) NumBuffers() uint16 { return binary.LittleEndian.Uint16(h[10:]) }

// SetNumBuffers sets num_buffers.
func (h Header) SetNumBuffers(v uint16) { binary.LittleEndian.PutUint16(h[10:], v) }
