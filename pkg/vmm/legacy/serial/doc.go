// SPDX-License-Identifier: Apache-2.0

// Package serial emulates a 16450-class UART (an 8250 without FIFOs) at an
// I/O port base, as COM1 (0x3f8, IRQ 4) for the guest console.
//
// Register set: National Semiconductor PC16450/8250 data sheet (RBR/THR,
// IER, IIR, LCR, MCR, LSR, MSR, SCR, and DLL/DLM while LCR.DLAB is set).
// Transmitted bytes go to an io.Writer; received bytes come from Input and
// are held in a bounded buffer.
//
// Trust boundary: every register access comes from the guest. Unknown
// offsets and widths read as zero and are ignored on write; the receive
// buffer is bounded (input beyond it is refused, not queued without limit).
//
// Goroutines: none. Methods are safe to call from several goroutines (the
// vCPU loops and the console input pump); the interrupt callback and the
// output writer are called with no lock held.
package serial
