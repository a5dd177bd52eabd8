// SPDX-License-Identifier: Apache-2.0

package i8042

import "testing"

func read(d *Device, off uint64) uint8 {
	b := []byte{0xff}
	d.Read(off, b)
	return b[0]
}

func TestResetCommand(t *testing.T) {
	resets := 0
	d := New(func() { resets++ })
	d.Write(offData, []byte{cmdReset})   // data port: not a command
	d.Write(offCommand, []byte{0xfe, 0}) // wrong width
	d.Write(offCommand, []byte{0xd1})    // another command
	if resets != 0 {
		t.Fatalf("resets = %d after non-reset writes, want 0", resets)
	}
	d.Write(offCommand, []byte{cmdReset})
	if resets != 1 {
		t.Errorf("resets = %d after 0xFE to the command port, want 1", resets)
	}
}

// TestControllerProbe replays what Linux's i8042 driver does at boot: read
// the configuration byte, write it back, run the self test.
func TestControllerProbe(t *testing.T) {
	d := New(nil)
	if st := read(d, offCommand); st&statusOBF != 0 {
		t.Fatalf("status = %#x at start, want the output buffer empty", st)
	}
	d.Write(offCommand, []byte{cmdReadCTR})
	if st := read(d, offCommand); st&statusOBF == 0 {
		t.Fatalf("status = %#x after READ_CTR, want OBF", st)
	}
	if ctr := read(d, offData); ctr != defaultCTR {
		t.Errorf("CTR = %#x, want %#x", ctr, defaultCTR)
	}
	if st := read(d, offCommand); st&statusOBF != 0 {
		t.Error("OBF still set after the data port was read")
	}
	d.Write(offCommand, []byte{cmdWriteCTR})
	d.Write(offData, []byte{0x45})
	d.Write(offCommand, []byte{cmdReadCTR})
	if ctr := read(d, offData); ctr != 0x45 {
		t.Errorf("CTR after WRITE_CTR 0x45 = %#x", ctr)
	}
	d.Write(offCommand, []byte{cmdSelfTest})
	if r := read(d, offData); r != selfTestPassed {
		t.Errorf("self test = %#x, want %#x", r, selfTestPassed)
	}
}
