// SPDX-License-Identifier: Apache-2.0

package blk

import (
	"math"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// serve performs the request in c and returns the used length for Push.
// Every byte of c is guest-controlled; virtio.Queue.Pop has checked that
// the buffers lie in guest RAM. serve then checks, in order:
//
//  1. The writable part is not empty, or there is nowhere to put the
//     status: the chain is dropped (used length 0, Metrics.Dropped).
//  2. The readable part holds a full header, else StatusIOErr.
//  3. For IN and OUT: the data length is a multiple of SectorSize and the
//     sectors [sector, sector+len/512) lie inside the capacity, computed
//     without overflow; OUT is refused on a read-only disk. Else
//     StatusIOErr, without touching the image.
//
// The header is copied before it is decoded, so the guest changing it
// meanwhile cannot make a checked value differ from a used one. The used
// length is, as in Firecracker, the data bytes written plus the status
// byte for a successful IN or GET_ID, and 1 otherwise (Linux's virtio_blk
// ignores it).
//
// The caller holds d.mu.
func (d *Device) serve(c *virtio.Chain) uint32 {
	data, status := splitStatus(c.Writable())
	if status == nil {
		d.m.Dropped.Add(1)
		return 0
	}
	hdr, out := splitHeader(c.Readable())
	if hdr == nil {
		d.m.BadRequests.Add(1)
		status[0] = byte(StatusIOErr)
		return 1
	}
	var (
		st Status
		n  uint64 // data bytes written into guest buffers
	)
	switch hdr.Type() {
	case TypeIn:
		st, n = d.read(hdr.Sector(), data)
	case TypeOut:
		st = d.write(hdr.Sector(), out)
	case TypeFlush:
		st = d.flush()
	case TypeGetID:
		n = uint64(copyTo(data, d.id[:]))
		d.m.GetIDs.Add(1)
	default:
		d.m.Unsupported.Add(1)
		st = StatusUnsupported
	}
	status[0] = byte(st)
	if n >= math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n) + 1
}

// read fills data from the image at sector.
func (d *Device) read(sector uint64, data [][]byte) (Status, uint64) {
	off, ok := d.span(sector, totalLen(data))
	if !ok {
		d.m.BadRequests.Add(1)
		return StatusIOErr, 0
	}
	var n uint64
	for _, b := range data {
		// ReadAt reads len(b) bytes or fails; io.EOF means the image
		// shrank under us since New.
		if _, err := d.disk.ReadAt(b, off); err != nil {
			d.m.IOErrors.Add(1)
			return StatusIOErr, 0
		}
		off += int64(len(b))
		n += uint64(len(b))
	}
	d.m.Reads.Add(1)
	d.m.ReadBytes.Add(n)
	return StatusOK, n
}

// write writes data to the image at sector.
func (d *Device) write(sector uint64, data [][]byte) Status {
	if d.readOnly {
		d.m.ReadOnlyRejects.Add(1)
		d.m.BadRequests.Add(1)
		return StatusIOErr
	}
	off, ok := d.span(sector, totalLen(data))
	if !ok {
		d.m.BadRequests.Add(1)
		return StatusIOErr
	}
	var n uint64
	for _, b := range data {
		if _, err := d.disk.WriteAt(b, off); err != nil {
			d.m.IOErrors.Add(1)
			return StatusIOErr
		}
		off += int64(len(b))
		n += uint64(len(b))
	}
	d.m.Writes.Add(1)
	d.m.WriteBytes.Add(n)
	return StatusOK
}

// flush makes completed writes durable (§5.2.6.2). A read-only disk has
// nothing to flush. The header's sector is ignored.
func (d *Device) flush() Status {
	if !d.readOnly {
		if err := d.disk.Sync(); err != nil {
			d.m.IOErrors.Add(1)
			return StatusIOErr
		}
	}
	d.m.Flushes.Add(1)
	return StatusOK
}

// span checks a transfer of n bytes at sector against the capacity and
// returns its byte offset in the image. n must be a whole number of
// sectors (§5.2.6.1). The check avoids overflow: sector*SectorSize is
// computed only once sector <= capacity, and capacity*SectorSize fits in an
// int64 because New refuses a larger disk.
func (d *Device) span(sector, n uint64) (int64, bool) {
	if n%SectorSize != 0 || sector > d.capacity || n/SectorSize > d.capacity-sector {
		return 0, false
	}
	return int64(sector * SectorSize), true
}

// splitStatus splits the writable buffers into the data buffers and the
// status byte, the last writable byte. It returns a nil status when there
// are no writable bytes. Empty buffers are dropped from data.
func splitStatus(w [][]byte) (data [][]byte, status []byte) {
	last := len(w) - 1
	for last >= 0 && len(w[last]) == 0 {
		last--
	}
	if last < 0 {
		return nil, nil
	}
	for _, b := range w[:last] {
		if len(b) > 0 {
			data = append(data, b)
		}
	}
	lb := w[last]
	if len(lb) > 1 {
		data = append(data, lb[:len(lb)-1])
	}
	return data, lb[len(lb)-1:]
}

// splitHeader copies the request header from the start of the readable
// buffers, which may split it anywhere, and returns it with the buffers
// that follow it (the OUT data). It returns a nil header when the readable
// part is shorter than HeaderSize.
func splitHeader(r [][]byte) (Header, [][]byte) {
	hdr := make(Header, HeaderSize)
	got := 0
	for i, b := range r {
		k := copy(hdr[got:], b)
		got += k
		if got == HeaderSize {
			rest := make([][]byte, 0, len(r)-i)
			if k < len(b) {
				rest = append(rest, b[k:])
			}
			for _, b := range r[i+1:] {
				if len(b) > 0 {
					rest = append(rest, b)
				}
			}
			return hdr, rest
		}
	}
	return nil, nil
}

// totalLen returns the summed length of bufs. A chain holds at most 32768
// buffers of at most 4 GiB each (§2.7.5, 32-bit len), so it cannot
// overflow.
func totalLen(bufs [][]byte) uint64 {
	var n uint64
	for _, b := range bufs {
		n += uint64(len(b))
	}
	return n
}

// copyTo copies src into the buffers of dst in order and returns the
// number of bytes copied.
func copyTo(dst [][]byte, src []byte) int {
	n := 0
	for _, b := range dst {
		if n == len(src) {
			break
		}
		n += copy(b, src[n:])
	}
	return n
}
