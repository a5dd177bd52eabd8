// SPDX-License-Identifier: Apache-2.0

package poweroff

import "testing"

func TestWrite(t *testing.T) {
	var got []uint8
	d := New(func(s uint8) { got = append(got, s) })
	d.Write(0, []byte{1, 2}) // wrong width: ignored
	d.Write(1, []byte{3})    // outside the port: ignored
	d.Write(0, []byte{7})
	if len(got) != 1 || got[0] != 7 {
		t.Fatalf("power-offs = %v, want one with status 7", got)
	}
}
