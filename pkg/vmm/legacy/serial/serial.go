// SPDX-License-Identifier: Apache-2.0

package serial

import (
	"io"
	"sync"
)

// Register offsets from the base port (PC16450 data sheet, table 2).
const (
	regData     = 0 // RBR (read) / THR (write); DLL when DLAB
	regIER      = 1 // interrupt enable; DLM when DLAB
	regIIR      = 2 // interrupt identification (read) / FCR (write)
	regLCR      = 3 // line control
	regMCR      = 4 // modem control
	regLSR      = 5 // line status
	regMSR      = 6 // modem status
	regScratch  = 7 // scratch
	registerLen = 8
)

// Bits.
const (
	ierRxData = 0x01 // received data available
	ierTHRE   = 0x02 // transmitter holding register empty

	iirNone  = 0x01 // no interrupt pending
	iirTHRE  = 0x02
	iirRData = 0x04

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10

	lsrDataReady = 0x01
	lsrTHRE      = 0x20
	lsrTEMT      = 0x40

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80
)

// Ports of the first PC serial port.
const (
	COM1Base = 0x3f8
	COM1IRQ  = 4
	// Len is the size of the register window in ports.
	Len = registerLen
)

// DefaultInputLimit bounds the bytes Input holds until the guest reads them.
const DefaultInputLimit = 64 << 10

// Device is one UART.
type Device struct {
	out     io.Writer
	trigger func()

	mu       sync.Mutex // guards the fields below
	ier      uint8
	lcr      uint8
	mcr      uint8
	scratch  uint8
	dll, dlm uint8
	thrEmpty bool // a THR-empty interrupt is pending (cleared by reading IIR)
	in       []byte
	inLimit  int
	dropped  uint64
}

// New returns a UART writing guest output to out (nil discards it) and
// calling trigger, if not nil, to raise its interrupt line (an edge).
func New(out io.Writer, trigger func()) *Device {
	if out == nil {
		out = io.Discard
	}
	if trigger == nil {
		trigger = func() {}
	}
	return &Device{out: out, trigger: trigger, inLimit: DefaultInputLimit, dll: 12}
}

// Input queues bytes for the guest to read and returns how many were taken:
// fewer than len(p) once the bounded buffer is full.
func (d *Device) Input(p []byte) int {
	d.mu.Lock()
	n := min(len(p), d.inLimit-len(d.in))
	d.in = append(d.in, p[:n]...)
	d.dropped += uint64(len(p) - n)
	raise := n > 0 && d.ier&ierRxData != 0
	d.mu.Unlock()
	if raise {
		d.trigger()
	}
	return n
}

// Read serves a guest read of len(data) bytes at register offset off.
func (d *Device) Read(off uint64, data []byte) {
	clear(data)
	if len(data) != 1 || off >= registerLen {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var v uint8
	switch off {
	case regData:
		if d.lcr&lcrDLAB != 0 {
			v = d.dll
		} else if len(d.in) > 0 {
			v = d.in[0]
			d.in = d.in[1:]
			if len(d.in) == 0 {
				d.in = nil // let the buffer go once drained
			}
		}
	case regIER:
		if d.lcr&lcrDLAB != 0 {
			v = d.dlm
		} else {
			v = d.ier
		}
	case regIIR:
		v = d.iirLocked()
		if v == iirTHRE {
			d.thrEmpty = false // reading IIR clears a THRE interrupt
		}
	case regLCR:
		v = d.lcr
	case regMCR:
		v = d.mcr
	case regLSR:
		v = lsrTHRE | lsrTEMT
		if len(d.in) > 0 {
			v |= lsrDataReady
		}
	case regMSR:
		if d.mcr&mcrLoop != 0 {
			// Loopback: the modem outputs feed the modem inputs.
			if d.mcr&mcrDTR != 0 {
				v |= msrDSR
			}
			if d.mcr&mcrRTS != 0 {
				v |= msrCTS
			}
			if d.mcr&mcrOUT1 != 0 {
				v |= msrRI
			}
			if d.mcr&mcrOUT2 != 0 {
				v |= msrDCD
			}
		} else {
			v = msrDCD | msrDSR | msrCTS
		}
	case regScratch:
		v = d.scratch
	}
	data[0] = v
}

// iirLocked returns the highest-priority pending interrupt.
func (d *Device) iirLocked() uint8 {
	switch {
	case d.ier&ierRxData != 0 && len(d.in) > 0:
		return iirRData
	case d.ier&ierTHRE != 0 && d.thrEmpty:
		return iirTHRE
	}
	return iirNone
}

// Write serves a guest write of data at register offset off.
func (d *Device) Write(off uint64, data []byte) {
	if len(data) != 1 || off >= registerLen {
		return
	}
	v := data[0]
	var (
		out   []byte
		raise bool
	)
	d.mu.Lock()
	switch off {
	case regData:
		if d.lcr&lcrDLAB != 0 {
			d.dll = v
			break
		}
		if d.mcr&mcrLoop != 0 {
			if len(d.in) < d.inLimit {
				d.in = append(d.in, v)
			}
			raise = d.ier&ierRxData != 0
			break
		}
		out = []byte{v}
		// The byte leaves at once: the holding register is empty again.
		d.thrEmpty = true
		raise = d.ier&ierTHRE != 0
	case regIER:
		if d.lcr&lcrDLAB != 0 {
			d.dlm = v
			break
		}
		old := d.ier
		d.ier = v & 0x0f
		// Enabling THRE interrupts with an empty THR interrupts at once,
		// as the 16450 does; Linux's transmit path relies on it.
		if d.ier&ierTHRE != 0 && old&ierTHRE == 0 {
			d.thrEmpty = true
			raise = true
		}
		if d.ier&ierRxData != 0 && len(d.in) > 0 {
			raise = true
		}
	case regIIR:
		// FCR: no FIFOs on a 16450; ignored.
	case regLCR:
		d.lcr = v
	case regMCR:
		d.mcr = v & 0x1f
	case regScratch:
		d.scratch = v
	}
	d.mu.Unlock()
	if out != nil {
		d.out.Write(out) // the console is best effort: a slow log must not stop the guest
	}
	if raise {
		d.trigger()
	}
}

// Dropped returns how many input bytes were refused because the buffer was
// full.
func (d *Device) Dropped() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped
}
