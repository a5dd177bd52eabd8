// SPDX-License-Identifier: Apache-2.0

package i8042

import "testing"

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
	b := []byte{0xff}
	d.Read(offCommand, b)
	if b[0] != 0 {
		t.Errorf("status = %#x, want 0 (idle)", b[0])
	}
}
