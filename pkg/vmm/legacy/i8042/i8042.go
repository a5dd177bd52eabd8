// SPDX-License-Identifier: Apache-2.0

package i8042

// Ports (IBM PC/AT technical reference): data at 0x60, status/command at
// 0x64. The window covers 0x60..0x64.
const (
	Base = 0x60
	Len  = 5

	offData    = 0
	offCommand = 4

	// cmdReset pulses output port bit 0, the CPU reset line.
	cmdReset = 0xfe
)

// Device is the controller. The zero value is not usable; call New.
type Device struct {
	reset func()
}

// New returns a controller that calls reset when the guest asks for a CPU
// reset.
func New(reset func()) *Device {
	if reset == nil {
		reset = func() {}
	}
	return &Device{reset: reset}
}

// Read serves a guest read: status 0 (no data, input buffer empty), data 0.
func (d *Device) Read(off uint64, data []byte) { clear(data) }

// Write serves a guest write; only the reset command has an effect.
func (d *Device) Write(off uint64, data []byte) {
	if off == offCommand && len(data) == 1 && data[0] == cmdReset {
		d.reset()
	}
}
