// SPDX-License-Identifier: Apache-2.0

package serial

import (
	"bytes"
	"testing"
)

func read(d *Device, off uint64) uint8 {
	b := []byte{0xff}
	d.Read(off, b)
	return b[0]
}

func write(d *Device, off uint64, v uint8) { d.Write(off, []byte{v}) }

func TestTransmit(t *testing.T) {
	var out bytes.Buffer
	irqs := 0
	d := New(&out, func() { irqs++ })
	for _, c := range []byte("hi\n") {
		if lsr := read(d, regLSR); lsr&lsrTHRE == 0 {
			t.Fatalf("LSR = %#x before a write, want THRE set", lsr)
		}
		write(d, regData, c)
	}
	if out.String() != "hi\n" {
		t.Errorf("output = %q, want %q", out.String(), "hi\n")
	}
	if irqs != 0 {
		t.Errorf("%d interrupts with IER = 0, want none", irqs)
	}

	// Enabling THRE interrupts with an empty THR raises one at once, and
	// reading IIR acknowledges it.
	write(d, regIER, ierTHRE)
	if irqs != 1 {
		t.Fatalf("interrupts after enabling THRE = %d, want 1", irqs)
	}
	if iir := read(d, regIIR); iir != iirTHRE {
		t.Errorf("IIR = %#x, want THRE (%#x)", iir, iirTHRE)
	}
	if iir := read(d, regIIR); iir != iirNone {
		t.Errorf("IIR after acknowledging = %#x, want none (%#x)", iir, iirNone)
	}
	write(d, regData, 'x')
	if irqs != 2 || read(d, regIIR) != iirTHRE {
		t.Errorf("after a write with THRE enabled: interrupts = %d, want 2 and IIR = THRE", irqs)
	}
}

func TestReceive(t *testing.T) {
	irqs := 0
	d := New(nil, func() { irqs++ })
	d.inLimit = 4
	if n := d.Input([]byte("abcdef")); n != 4 {
		t.Errorf("Input of 6 bytes with room for 4 = %d, want 4", n)
	}
	if d.Dropped() != 2 {
		t.Errorf("Dropped() = %d, want 2", d.Dropped())
	}
	write(d, regIER, ierRxData)
	if irqs != 1 || read(d, regIIR) != iirRData {
		t.Fatalf("enabling RX interrupts with data queued: interrupts = %d, IIR != RDA", irqs)
	}
	var got []byte
	for read(d, regLSR)&lsrDataReady != 0 {
		got = append(got, read(d, regData))
	}
	if string(got) != "abcd" {
		t.Errorf("received %q, want %q", got, "abcd")
	}
	if read(d, regIIR) != iirNone {
		t.Error("IIR with no data left is not 'none'")
	}
}

func TestDivisorLatchAndScratch(t *testing.T) {
	d := New(nil, nil)
	write(d, regLCR, lcrDLAB|0x03)
	write(d, regData, 0x01)
	write(d, regIER, 0x00)
	if read(d, regData) != 0x01 || read(d, regIER) != 0x00 {
		t.Error("divisor latch did not read back")
	}
	write(d, regLCR, 0x03)
	if read(d, regIER) != 0 {
		t.Error("IER changed by a divisor latch write")
	}
	write(d, regScratch, 0x5a)
	if read(d, regScratch) != 0x5a {
		t.Error("scratch register did not read back")
	}
}

func TestLoopback(t *testing.T) {
	var out bytes.Buffer
	d := New(&out, nil)
	// Linux's 8250 autoconfig loopback test: MCR = LOOP|OUT2|RTS must read
	// back as DCD|CTS in MSR's top nibble.
	write(d, regMCR, mcrLoop|mcrOUT2|mcrRTS)
	if got := read(d, regMSR) & 0xf0; got != 0x90 {
		t.Errorf("MSR in loopback = %#x, want 0x90", got)
	}
	write(d, regData, 'z')
	if out.Len() != 0 || read(d, regData) != 'z' {
		t.Error("loopback byte was not returned to the receiver")
	}
}

func TestHostileAccesses(t *testing.T) {
	d := New(nil, nil)
	for _, off := range []uint64{8, 1 << 40, ^uint64(0)} {
		d.Write(off, []byte{1})
		b := []byte{7}
		if d.Read(off, b); b[0] != 0 {
			t.Errorf("read at offset %#x = %#x, want 0", off, b[0])
		}
	}
	wide := []byte{1, 2, 3, 4}
	d.Read(regLSR, wide)
	if !bytes.Equal(wide, make([]byte, 4)) {
		t.Errorf("4-byte read = %v, want zeros", wide)
	}
	d.Write(regData, nil)
	d.Write(regData, []byte{1, 2})
}
