// SPDX-License-Identifier: Apache-2.0

package blk

import "encoding/binary"

// A request is one descriptor chain (virtio 1.2 §5.2.6):
//
//	device-readable                         device-writable
//	+----------+----------+--------------+  +----------------+--------+
//	| type u32 | reserved | sector u64   |  | data (IN,      | status |
//	|          | u32      |              |  | GET_ID)        | u8     |
//	+----------+----------+--------------+  +----------------+--------+
//	 0          4          8            16
//	followed, for OUT, by the data to write (still device-readable)
//
// All fields are little-endian. The header may span several descriptors
// (§2.6.4: the device must not assume message framing), and the status is
// the last byte of the writable part, wherever its descriptor boundaries
// fall.

// HeaderSize is the size of the request header (struct virtio_blk_req up to
// data, §5.2.6).
const HeaderSize = 16

// SectorSize is the unit of the header's sector field and of capacity,
// whatever the block size (§5.2.4, §5.2.6: "sector ... in 512-byte units").
const SectorSize = 512

// IDBytes is the length of the device ID returned by GET_ID (§5.2.6:
// VIRTIO_BLK_ID_BYTES, a NUL-padded string of up to 20 bytes).
const IDBytes = 20

// RequestType is the type field of a request header (§5.2.6).
type RequestType uint32

// Request types (virtio 1.2 §5.2.6). Types not listed are answered with
// StatusUnsupported.
const (
	TypeIn    RequestType = 0 // VIRTIO_BLK_T_IN: read sectors into the writable data
	TypeOut   RequestType = 1 // VIRTIO_BLK_T_OUT: write the readable data to sectors
	TypeFlush RequestType = 4 // VIRTIO_BLK_T_FLUSH: make completed writes durable
	TypeGetID RequestType = 8 // VIRTIO_BLK_T_GET_ID: return the device ID string
)

// Status is the status byte the device writes at the end of a request
// (§5.2.6).
type Status uint8

// Request statuses (virtio 1.2 §5.2.6).
const (
	StatusOK          Status = 0 // VIRTIO_BLK_S_OK
	StatusIOErr       Status = 1 // VIRTIO_BLK_S_IOERR
	StatusUnsupported Status = 2 // VIRTIO_BLK_S_UNSUPP
)

// Header is a request header in wire format, HeaderSize bytes. Its
// accessors read little-endian fields; a Header shorter than HeaderSize
// panics, so the device only builds one from a copied, full-length header.
type Header []byte

// NewHeader returns a header for a request of type typ at sector.
func NewHeader(typ RequestType, sector uint64) Header {
	h := make(Header, HeaderSize)
	h.SetType(typ)
	h.SetSector(sector)
	return h
}

// Type returns the request type.
func (h Header) Type() RequestType { return RequestType(binary.LittleEndian.Uint32(h[0:4])) }

// SetType sets the request type.
func (h Header) SetType(t RequestType) { binary.LittleEndian.PutUint32(h[0:4], uint32(t)) }

// Reserved returns the reserved field, which the device ignores (§5.2.6;
// it was ioprio in the legacy interface).
func (h Header) Reserved() uint32 { return binary.LittleEndian.Uint32(h[4:8]) }

// Sector returns the first 512-byte sector the request reads or writes.
func (h Header) Sector() uint64 { return binary.LittleEndian.Uint64(h[8:16]) }

// SetSector sets the sector.
func (h Header) SetSector(s uint64) { binary.LittleEndian.PutUint64(h[8:16], s) }
