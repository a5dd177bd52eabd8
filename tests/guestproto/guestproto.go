// SPDX-License-Identifier: Apache-2.0

package guestproto

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Disk and vsock layout of the device checks.
const (
	BlkDataBytes     = 8 << 20 // the host's data at the start of /dev/vda
	BlkWriteOffset   = BlkDataBytes
	BlkWriteBytes    = 1 << 20
	BlkWriteStream   = 7    // stream the guest writes at BlkWriteOffset
	VsockHostPort    = 1024 // the host listens, the guest dials
	VsockGuestPort   = 1025 // the guest listens, the host dials
	VsockConnections = 8
)

// Stream returns the deterministic bytes of stream id: both ends of a
// transfer generate them, so neither has to keep a copy.
func Stream(id uint64) io.Reader {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], id)
	return rand.NewChaCha8(seed)
}

// Dialer and Acceptor are the two ends of one transfer: the connection's
// index (4 bytes), then each bytes of stream idx from the dialer, then each
// bytes of stream 1000+idx back. Each side checks what it receives.
func Dialer(c io.ReadWriter, idx uint32, each int64) error {
	if err := binary.Write(c, binary.LittleEndian, idx); err != nil {
		return err
	}
	if _, err := io.CopyN(c, Stream(uint64(idx)), each); err != nil {
		return fmt.Errorf("conn %d: send: %w", idx, err)
	}
	return Expect(c, 1000+uint64(idx), each)
}

// Acceptor is the other end of Dialer.
func Acceptor(c io.ReadWriter, each int64) error {
	var idx uint32
	if err := binary.Read(c, binary.LittleEndian, &idx); err != nil {
		return err
	}
	if err := Expect(c, uint64(idx), each); err != nil {
		return err
	}
	if _, err := io.CopyN(c, Stream(1000+uint64(idx)), each); err != nil {
		return fmt.Errorf("conn %d: send: %w", idx, err)
	}
	return nil
}

// Expect reads n bytes from r and compares them with stream id.
func Expect(r io.Reader, id uint64, n int64) error {
	want := Stream(id)
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for done := int64(0); done < n; {
		k := int(min(int64(len(a)), n-done))
		if _, err := io.ReadFull(r, a[:k]); err != nil {
			return fmt.Errorf("stream %d: after %d bytes: %w", id, done, err)
		}
		io.ReadFull(want, b[:k])
		if !bytes.Equal(a[:k], b[:k]) {
			return fmt.Errorf("stream %d: bytes differ in [%d, %d)", id, done, done+int64(k))
		}
		done += int64(k)
	}
	return nil
}

// WriteTree writes n one-byte files into dir, 100 a subdirectory (d000/
// f00000 ...), as a source tree spreads them: the share benchmark's
// layout, written by the host for the guest to walk and by the guest when
// it times creation.
func WriteTree(dir string, n int) error {
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), []byte("x"), 0o644); err != nil {
			return err
		}
	}
	return nil
}
