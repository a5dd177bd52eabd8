// SPDX-License-Identifier: Apache-2.0

package amd64

import (
	"errors"
	"testing"
)

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// TestMPTable reads the table back the way Linux's mpparse.c does: find the
// floating pointer, check both checksums, walk the entries by type.
func TestMPTable(t *testing.T) {
	for _, n := range []int{1, 2, 4, 32, MaxVCPUs} {
		blob, err := MPTable(n)
		if err != nil {
			t.Fatalf("MPTable(%d) = %v", n, err)
		}
		if blob.Addr != MPTableAddr || len(blob.Data) > MPTableMaxSize {
			t.Fatalf("MPTable(%d) at %#x, %d bytes", n, blob.Addr, len(blob.Data))
		}
		b := blob.Data
		mpf := b[:16]
		if string(mpf[:4]) != "_MP_" || sum(mpf) != 0 || mpf[8] != 1 || mpf[9] != 4 || mpf[11] != 0 || mpf[12] != 0 {
			t.Errorf("MPTable(%d) floating pointer = %x", n, mpf)
		}
		phys := uint64(le.Uint32(mpf[4:]))
		if phys != MPTableAddr+16 {
			t.Fatalf("MPTable(%d) config table pointer %#x, want %#x", n, phys, MPTableAddr+16)
		}
		cfg := b[phys-MPTableAddr:]
		length := int(le.Uint16(cfg[4:]))
		if length != len(cfg) {
			t.Fatalf("MPTable(%d) base table length %d, want %d", n, length, len(cfg))
		}
		if string(cfg[:4]) != "PCMP" || cfg[6] != 4 || sum(cfg[:length]) != 0 {
			t.Errorf("MPTable(%d) header %x, checksum sum %#x", n, cfg[:8], sum(cfg[:length]))
		}
		if string(cfg[8:16]) != "MSBGO   " || string(cfg[16:28]) != "MICROSANDBOX" {
			t.Errorf("MPTable(%d) ids %q %q", n, cfg[8:16], cfg[16:28])
		}
		if le.Uint32(cfg[28:]) != 0 || le.Uint16(cfg[32:]) != 0 || le.Uint16(cfg[40:]) != 0 || cfg[42] != 0 {
			t.Errorf("MPTable(%d) OEM or extended table fields non-zero", n)
		}
		if got := le.Uint32(cfg[36:]); got != LAPICAddr {
			t.Errorf("MPTable(%d) local APIC address %#x", n, got)
		}
		count := int(le.Uint16(cfg[34:]))
		if count != n+IOAPICPins+4 {
			t.Errorf("MPTable(%d) entry count %d, want %d", n, count, n+IOAPICPins+4)
		}

		var cpus, buses, ioapics, ioints, lints int
		lastType := byte(0)
		for off, i := mpcHeaderSize, 0; i < count; i++ {
			e := cfg[off:]
			if e[0] < lastType {
				t.Errorf("MPTable(%d) entry %d type %d after type %d", n, i, e[0], lastType)
			}
			lastType = e[0]
			switch e[0] {
			case mpEntryProcessor:
				wantFlags := byte(1)
				if cpus == 0 {
					wantFlags = 3
				}
				if e[1] != byte(cpus) || e[2] != 0x14 || e[3] != wantFlags || le.Uint32(e[4:]) != 0x600 || le.Uint32(e[8:]) != 0x201 {
					t.Errorf("MPTable(%d) processor %d = %x", n, cpus, e[:20])
				}
				cpus++
				off += 20
				continue
			case mpEntryBus:
				if e[1] != 0 || string(e[2:8]) != "ISA   " {
					t.Errorf("MPTable(%d) bus = %x", n, e[:8])
				}
				buses++
			case mpEntryIOAPIC:
				if e[1] != byte(n) || e[2] != 0x11 || e[3] != 1 || le.Uint32(e[4:]) != 0xfec00000 {
					t.Errorf("MPTable(%d) ioapic = %x", n, e[:8])
				}
				ioapics++
			case mpEntryIOInterrupt:
				pin := byte(ioints)
				if e[1] != mpIntINT || le.Uint16(e[2:]) != 0 || e[4] != 0 || e[5] != pin || e[6] != byte(n) || e[7] != pin {
					t.Errorf("MPTable(%d) io interrupt %d = %x", n, ioints, e[:8])
				}
				ioints++
			case mpEntryLocalInt:
				want := [][]byte{{4, 3, 0, 0, 0, 0, 0, 0}, {4, 1, 0, 0, 0, 0, 0xff, 1}}[lints]
				if string(e[:8]) != string(want) {
					t.Errorf("MPTable(%d) local interrupt %d = %x, want %x", n, lints, e[:8], want)
				}
				lints++
			default:
				t.Fatalf("MPTable(%d) entry %d has type %d", n, i, e[0])
			}
			off += 8
		}
		if cpus != n || buses != 1 || ioapics != 1 || ioints != IOAPICPins || lints != 2 {
			t.Errorf("MPTable(%d) has %d cpus, %d buses, %d ioapics, %d io ints, %d local ints", n, cpus, buses, ioapics, ioints, lints)
		}
	}
}

func TestMPTableVCPUCount(t *testing.T) {
	for _, n := range []int{-1, 0, MaxVCPUs + 1, 1000} {
		if _, err := MPTable(n); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("MPTable(%d) = %v, want ErrInvalidConfig", n, err)
		}
	}
}
