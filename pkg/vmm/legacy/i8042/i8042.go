// SPDX-License-Identifier: Apache-2.0

package i8042

import "sync"

// Ports (IBM PC/AT technical reference): data at 0x60, status/command at
// 0x64. The window covers 0x60..0x64.
const (
	Base = 0x60
	Len  = 5

	offData    = 0
	offCommand = 4
)

// Controller commands (8042 command set as Linux's drivers/input/serio/
// i8042.h names them).
const (
	cmdReadCTR     = 0x20 // controller configuration byte -> output buffer
	cmdWriteCTR    = 0x60 // next data byte -> controller configuration byte
	cmdAuxDisable  = 0xa7
	cmdAuxEnable   = 0xa8
	cmdAuxTest     = 0xa9 // -> 0x00 (no error)
	cmdSelfTest    = 0xaa // -> 0x55 (passed)
	cmdKbdTest     = 0xab // -> 0x00 (no error)
	cmdKbdDisable  = 0xad
	cmdKbdEnable   = 0xae
	cmdReset       = 0xfe // pulse output port bit 0: the CPU reset line
	selfTestPassed = 0x55
	statusOBF      = 0x01 // output buffer full
	statusSysFlag  = 0x04 // system flag: POST passed
	defaultCTR     = 0x61 // kbd interrupt on, system flag, translation
)

// Device is the controller. The zero value is not usable; call New.
type Device struct {
	reset func()

	mu        sync.Mutex // guards the fields below
	ctr       uint8
	out       uint8
	outFull   bool
	expectCTR bool
}

// New returns a controller that calls reset when the guest asks for a CPU
// reset.
func New(reset func()) *Device {
	if reset == nil {
		reset = func() {}
	}
	return &Device{reset: reset, ctr: defaultCTR}
}

// Read serves a guest read: the status register or the output buffer.
// Nothing is ever attached, so only command replies fill the buffer.
func (d *Device) Read(off uint64, data []byte) {
	clear(data)
	if len(data) != 1 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch off {
	case offCommand:
		data[0] = statusSysFlag
		if d.outFull {
			data[0] |= statusOBF
		}
	case offData:
		data[0] = d.out
		d.outFull = false
	}
}

// Write serves a guest write: controller commands and their data byte.
func (d *Device) Write(off uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	v := data[0]
	d.mu.Lock()
	reset := false
	switch off {
	case offCommand:
		d.expectCTR = false
		switch v {
		case cmdReadCTR:
			d.reply(d.ctr)
		case cmdWriteCTR:
			d.expectCTR = true
		case cmdSelfTest:
			d.reply(selfTestPassed)
		case cmdKbdTest, cmdAuxTest:
			d.reply(0)
		case cmdReset:
			reset = true
		}
	case offData:
		if d.expectCTR {
			d.ctr = v
			d.expectCTR = false
		}
		// Bytes for the keyboard itself go nowhere: there is none.
	}
	d.mu.Unlock()
	if reset {
		d.reset()
	}
}

func (d *Device) reply(v uint8) {
	d.out, d.outFull = v, true
}
