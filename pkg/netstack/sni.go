// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"encoding/binary"
	"strings"
)

// TLS wire constants (RFC 8446 sections 4, 4.1.2 and 5.1; RFC 6066
// section 3).
const (
	tlsRecordHeaderLen    = 5
	tlsRecordHandshake    = 22
	tlsHandshakeHeaderLen = 4
	tlsClientHello        = 1
	tlsExtServerName      = 0
	tlsSNIHostName        = 0
	tlsMaxRecord          = 16384 + 2048 // TLSCiphertext limit
	maxServerName         = 253          // a DNS name in text form
)

// helloState is what parseClientHello learned from the bytes so far.
type helloState uint8

const (
	// helloMore: the bytes so far are a prefix of a ClientHello; read on.
	helloMore helloState = iota
	// helloDone: a complete ClientHello was parsed; name is its SNI host
	// name, empty when it has none.
	helloDone
	// helloNotTLS: the bytes are not a TLS ClientHello, or a malformed
	// one; there is no name to take.
	helloNotTLS
)

// parseClientHello reads the TLS records at the start of a guest stream
// and returns the SNI host name of the ClientHello they carry. The
// handshake message may span several records; it must fit in max bytes
// of stream, else the result is helloNotTLS. The bytes are
// guest-controlled: every length is checked against what is there, and
// a host name must be a plausible DNS name (letters, digits, '-', '_'
// and '.', at most 253 characters), lower-cased, trailing dot removed.
func parseClientHello(b []byte, max int) (name string, st helloState) {
	var msg []byte // the handshake bytes of the records so far
	for len(b) > 0 {
		// Decide on the first byte or two, so that a short plain-text
		// message is not held back waiting for a record header.
		if b[0] != tlsRecordHandshake || (len(b) > 1 && b[1] != 3) {
			return "", helloNotTLS
		}
		if len(b) < tlsRecordHeaderLen {
			return "", helloMore
		}
		n := int(binary.BigEndian.Uint16(b[3:5]))
		if n == 0 || n > tlsMaxRecord {
			return "", helloNotTLS
		}
		if len(b) < tlsRecordHeaderLen+n {
			return "", helloMore
		}
		msg = append(msg, b[tlsRecordHeaderLen:tlsRecordHeaderLen+n]...)
		b = b[tlsRecordHeaderLen+n:]
		if len(msg) >= tlsHandshakeHeaderLen {
			if msg[0] != tlsClientHello {
				return "", helloNotTLS
			}
			mlen := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if mlen > max {
				return "", helloNotTLS
			}
			if len(msg) >= tlsHandshakeHeaderLen+mlen {
				return parseHelloBody(msg[tlsHandshakeHeaderLen : tlsHandshakeHeaderLen+mlen])
			}
		}
	}
	return "", helloMore
}

// cursor reads big-endian fields from a byte slice; any read past the end
// sets bad and returns zero values.
type cursor struct {
	b   []byte
	bad bool
}

func (c *cursor) bytes(n int) []byte {
	if c.bad || n < 0 || n > len(c.b) {
		c.bad = true
		return nil
	}
	out := c.b[:n]
	c.b = c.b[n:]
	return out
}

func (c *cursor) u8() int {
	b := c.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (c *cursor) u16() int {
	b := c.bytes(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

// parseHelloBody parses a ClientHello body (RFC 8446 section 4.1.2) and
// returns its server_name host name.
func parseHelloBody(body []byte) (string, helloState) {
	c := cursor{b: body}
	c.bytes(2)        // legacy_version
	c.bytes(32)       // random
	c.bytes(c.u8())   // legacy_session_id
	suites := c.u16() // cipher_suites
	c.bytes(suites)
	comp := c.u8() // legacy_compression_methods
	c.bytes(comp)
	if c.bad || suites < 2 || suites%2 != 0 || comp < 1 {
		return "", helloNotTLS
	}
	if len(c.b) == 0 {
		return "", helloDone // no extensions
	}
	ext := cursor{b: c.bytes(c.u16())}
	if c.bad || len(c.b) != 0 {
		return "", helloNotTLS
	}
	name, seen := "", false
	for len(ext.b) > 0 && !ext.bad {
		typ := ext.u16()
		data := ext.bytes(ext.u16())
		if ext.bad {
			return "", helloNotTLS
		}
		if typ != tlsExtServerName {
			continue
		}
		if seen {
			return "", helloNotTLS // RFC 8446 section 4.2: no duplicates
		}
		seen = true
		n, ok := parseServerName(data)
		if !ok {
			return "", helloNotTLS
		}
		name = n
	}
	if ext.bad {
		return "", helloNotTLS
	}
	return name, helloDone
}

// parseServerName parses a server_name extension (RFC 6066 section 3):
// a list holding at most one host_name entry.
func parseServerName(data []byte) (string, bool) {
	c := cursor{b: data}
	list := cursor{b: c.bytes(c.u16())}
	if c.bad || len(c.b) != 0 {
		return "", false
	}
	name := ""
	for len(list.b) > 0 {
		typ := list.u8()
		v := list.bytes(list.u16())
		if list.bad {
			return "", false
		}
		if typ != tlsSNIHostName {
			continue
		}
		if name != "" {
			return "", false
		}
		n, ok := hostName(v)
		if !ok {
			return "", false
		}
		name = n
	}
	return name, true
}

// hostName validates and normalises an SNI host name.
func hostName(b []byte) (string, bool) {
	if len(b) > 0 && b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 || len(b) > maxServerName || b[0] == '.' {
		return "", false
	}
	prevDot := false
	for _, ch := range b {
		switch {
		case ch == '.':
			if prevDot {
				return "", false
			}
			prevDot = true
			continue
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-', ch == '_':
		default:
			return "", false
		}
		prevDot = false
	}
	return strings.ToLower(string(b)), true
}
