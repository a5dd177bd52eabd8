// SPDX-License-Identifier: Apache-2.0

package fuse

import "golang.org/x/sys/unix"

// HeadSize is how much of a request a scattered transport copies before
// ServeScattered: every request but WRITE fits in it (the longest, SYMLINK,
// is the header, a 255-byte name and a 4095-byte target), and so does
// WRITE's fixed part.
const HeadSize = 8 << 10

// ServeScattered is Serve for a request and a reply spread over buffers
// that alias guest memory, as a virtqueue chain holds them. It spares the
// copies of READ and WRITE payloads: READ data is read from the file
// straight into reply (preadv) and WRITE data written from tail
// (pwritev).
//
// head is the transport's private copy of the first min(HeadSize, request
// length) bytes: every field the server checks comes from head, so the
// guest cannot change it between check and use. tail is the rest of the
// request, in place; only a WRITE may have one, and only its payload is
// taken from it. reply is the writable space, in order. scratch builds
// every reply but READ's before it is copied into reply; it needs
// OutHeaderSize bytes, and MaxReplySize for the largest READDIR. It
// returns the reply length, 0 for none, like Serve.
func (s *Server) ServeScattered(head []byte, tail [][]byte, reply [][]byte, scratch []byte) int {
	s.m.Requests.Add(1)
	space := totalLen(reply)
	if space < OutHeaderSize || len(scratch) < OutHeaderSize {
		space = 0
	}
	scratch = scratch[:min(len(scratch), space)]
	if len(head) < InHeaderSize {
		s.m.BadRequests.Add(1)
		if len(head) < 16 || space == 0 {
			return 0
		}
		return copyTo(reply, scratch[:errorReply(scratch, le.Uint64(head[8:]), unix.EINVAL)])
	}
	hdr := parseInHeader(head)
	r := &request{hdr: hdr}
	total := uint64(len(head)) + uint64(totalLen(tail))
	switch {
	case hdr.len < InHeaderSize || uint64(hdr.len) > total || hdr.len > MaxRequestSize:
		r = nil
	case int(hdr.len) <= len(head):
		r.in = newBody(head[InHeaderSize:hdr.len])
	case hdr.opcode == opWrite:
		r.in = newBody(head[InHeaderSize:])
		r.tail = limit(tail, int(hdr.len)-len(head))
	default:
		r = nil
	}
	if r == nil {
		s.m.BadRequests.Add(1)
		if space == 0 {
			return 0
		}
		return copyTo(reply, scratch[:errorReply(scratch, hdr.unique, unix.EINVAL)])
	}
	if space > 0 {
		r.out = scratch[OutHeaderSize:]
		if hdr.opcode == opRead {
			r.vec = skip(reply, OutHeaderSize)
			r.vecLen = space - OutHeaderSize
		}
	}
	n, errno, noReply := s.serve(r)
	if noReply || space == 0 {
		return 0
	}
	if errno != 0 {
		s.m.Errors.Add(1)
		return copyTo(reply, scratch[:errorReply(scratch, hdr.unique, errno)])
	}
	putOutHeader(scratch, uint32(OutHeaderSize+n), 0, hdr.unique)
	if r.vec != nil {
		// The payload is in place already; only the header is copied.
		copyTo(reply, scratch[:OutHeaderSize])
		return OutHeaderSize + n
	}
	return copyTo(reply, scratch[:OutHeaderSize+n])
}

// maxIOV is UIO_MAXIOV, the most buffers one preadv or pwritev takes; a
// chain may have more (indirect tables hold up to 32768).
const maxIOV = 1024

// totalLen returns the summed length of bufs.
func totalLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
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

// skip returns bufs without their first n bytes. It does not modify bufs.
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

// limit returns the first n bytes of bufs (fewer if bufs is shorter),
// dropping empty buffers.
func limit(bufs [][]byte, n int) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n <= 0 {
			break
		}
		if len(b) == 0 {
			continue
		}
		b = b[:min(len(b), n)]
		out = append(out, b)
		n -= len(b)
	}
	return out
}

// preadFull reads into bufs at off until they are full, the file ends or
// an error after some bytes (which ends the read short).
func preadFull(fd int, bufs [][]byte, off int64) (int, error) {
	got := 0
	for len(bufs) > 0 {
		k, err := unix.Preadv(fd, bufs[:min(len(bufs), maxIOV)], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if got > 0 {
				return got, nil
			}
			return 0, err
		}
		if k == 0 {
			break
		}
		got += k
		bufs = skip(bufs, k)
	}
	return got, nil
}

// pwriteFull writes bufs at off, all of them unless an error stops it.
func pwriteFull(fd int, bufs [][]byte, off int64) (int, error) {
	done := 0
	for len(bufs) > 0 {
		k, err := unix.Pwritev(fd, bufs[:min(len(bufs), maxIOV)], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if done > 0 {
				return done, nil
			}
			return 0, err
		}
		done += k
		bufs = skip(bufs, k)
	}
	return done, nil
}
