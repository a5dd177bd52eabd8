// SPDX-License-Identifier: Apache-2.0

package netstack

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// clientHello returns the first bytes crypto/tls sends as a client.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		c := tls.Client(b, cfg)
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Handshake()
		b.Close()
	}()
	var out []byte
	buf := make([]byte, 4096)
	a.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, err := a.Read(buf)
		out = append(out, buf[:n]...)
		if _, st := parseClientHello(out, sniPeekMax); st != helloMore || err != nil {
			return out
		}
	}
}

// rechunk splits the handshake message of a one-record hello into
// records of at most size bytes.
func rechunk(hello []byte, size int) []byte {
	n := int(binary.BigEndian.Uint16(hello[3:5]))
	msg := hello[5 : 5+n]
	var out []byte
	for len(msg) > 0 {
		k := min(size, len(msg))
		out = append(out, 22, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

// withExtensions builds a minimal ClientHello whose extensions block is ext.
func withExtensions(ext []byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)             // session id
	body = append(body, 0, 2, 0x13, 1) // one suite
	body = append(body, 1, 0)          // null compression
	body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
	body = append(body, ext...)
	hs := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{22, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = binary.BigEndian.AppendUint16(list, uint16(len(n)))
		list = append(list, n...)
	}
	data := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
	data = append(data, list...)
	ext := []byte{0, 0}
	ext = binary.BigEndian.AppendUint16(ext, uint16(len(data)))
	return append(ext, data...)
}

func TestParseClientHello(t *testing.T) {
	tls13 := clientHello(t, &tls.Config{ServerName: "Api.Example.COM", MinVersion: tls.VersionTLS13})
	tls12 := clientHello(t, &tls.Config{ServerName: "www.example.org", MaxVersion: tls.VersionTLS12})
	noSNI := clientHello(t, &tls.Config{InsecureSkipVerify: true})
	tests := []struct {
		name  string
		in    []byte
		want  string
		state helloState
	}{
		{"tls13", tls13, "api.example.com", helloDone},
		{"tls12", tls12, "www.example.org", helloDone},
		{"no sni", noSNI, "", helloDone},
		{"split records", rechunk(tls13, 7), "api.example.com", helloDone},
		{"trailing data", append(bytes.Clone(tls13), "GET"...), "api.example.com", helloDone},
		{"http", []byte("GET / HTTP/1.1\r\n"), "", helloNotTLS},
		{"ssh", []byte("SSH-2.0-x\r\n"), "", helloNotTLS},
		{"short plain", []byte("ping"), "", helloNotTLS},
		{"one byte", []byte("p"), "", helloNotTLS},
		{"handshake byte", []byte{22}, "", helloMore},
		{"bad version", []byte{22, 2}, "", helloNotTLS},
		{"empty", nil, "", helloMore},
		{"alert record", []byte{21, 3, 3, 0, 2, 2, 40}, "", helloNotTLS},
		{"zero-length record", []byte{22, 3, 1, 0, 0}, "", helloNotTLS},
		{"huge record", []byte{22, 3, 1, 0xff, 0xff}, "", helloNotTLS},
		{"server hello", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, "", helloNotTLS},
		{"hello longer than max", []byte{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, "", helloNotTLS},
		{"minimal", withExtensions(sniExt("a.b")), "a.b", helloDone},
		{"trailing dot", withExtensions(sniExt("a.b.")), "a.b", helloDone},
		{"two names", withExtensions(sniExt("a.b", "c.d")), "", helloNotTLS},
		{"two extensions", withExtensions(append(sniExt("a.b"), sniExt("c.d")...)), "", helloNotTLS},
		{"bad char", withExtensions(sniExt("a b")), "", helloNotTLS},
		{"nul", withExtensions(sniExt("a\x00.b")), "", helloNotTLS},
		{"empty label", withExtensions(sniExt("a..b")), "", helloNotTLS},
		{"empty name", withExtensions(sniExt("")), "", helloNotTLS},
		{"too long", withExtensions(sniExt(string(bytes.Repeat([]byte("a"), 254)))), "", helloNotTLS},
		{"ext overrun", withExtensions([]byte{0, 0, 0, 9, 0}), "", helloNotTLS},
		{"empty extensions", withExtensions(nil), "", helloDone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, st := parseClientHello(tt.in, sniPeekMax)
			if got != tt.want || st != tt.state {
				t.Errorf("parseClientHello = %q, %d; want %q, %d", got, st, tt.want, tt.state)
			}
		})
	}
	// Every proper prefix of a hello asks for more.
	for _, h := range [][]byte{tls13, rechunk(tls12, 100)} {
		for i := range len(h) - 1 {
			if _, st := parseClientHello(h[:i], sniPeekMax); st != helloMore {
				t.Fatalf("prefix %d of %d: state %d, want more", i, len(h), st)
			}
		}
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(clientHello(f, &tls.Config{ServerName: "api.example.com"}))
	f.Add(rechunk(clientHello(f, &tls.Config{ServerName: "x.test", MaxVersion: tls.VersionTLS12}), 5))
	f.Add(withExtensions(sniExt("a.b")))
	f.Add(withExtensions(sniExt("a.b", "c")))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, st := parseClientHello(b, sniPeekMax)
		if name != "" {
			if st != helloDone {
				t.Fatalf("name %q with state %d", name, st)
			}
			if n, ok := hostName([]byte(name)); !ok || n != name {
				t.Fatalf("name %q is not a valid normalised host name", name)
			}
		}
	})
}
