// SPDX-License-Identifier: Apache-2.0

package poweroff

// Port is the I/O port of the switch, and Len its width in ports.
const (
	Port = 0x501
	Len  = 1
)

// Device is the switch.
type Device struct {
	off func(status uint8)
}

// New returns a switch that calls off with the status byte the guest wrote.
func New(off func(status uint8)) *Device {
	if off == nil {
		off = func(uint8) {}
	}
	return &Device{off: off}
}

// Read serves a guest read: the switch reads as zero.
func (d *Device) Read(off uint64, data []byte) { clear(data) }

// Write serves a guest write: a one-byte write turns the machine off.
func (d *Device) Write(off uint64, data []byte) {
	if off == 0 && len(data) == 1 {
		d.off(data[0])
	}
}
