// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"bytes"
	"testing"
)

func TestParseDetachKeys(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []byte
	}{
		{"ctrl-]", []byte{0x1d}},
		{"ctrl-p,ctrl-q", []byte{0x10, 0x11}},
		{"q", []byte{'q'}},
		{"ctrl-a,x", []byte{1, 'x'}},
	} {
		got, err := parseDetachKeys(tt.in)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("parseDetachKeys(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "ctrl-", "ctrl-ab", "alt-x", "ctrl-~"} {
		if _, err := parseDetachKeys(bad); !IsKind(err, ErrInvalidArgument) {
			t.Errorf("parseDetachKeys(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}
