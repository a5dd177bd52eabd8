// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"fmt"
	"sort"
)

// BusDevice is the view the bus has of a device: reads and writes at an
// offset from the start of the device's window. data is the guest's access
// (1 to 8 bytes); a read fills it.
type BusDevice interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// bus maps address ranges (I/O ports or guest physical addresses) to
// devices. It is built before the vCPUs start and read-only afterwards, so
// lookups take no lock.
type bus struct {
	entries []busEntry // sorted by base, disjoint
}

type busEntry struct {
	base, size uint64
	dev        BusDevice
}

// add inserts dev at [base, base+size); overlapping ranges are an error.
func (b *bus) add(base, size uint64, dev BusDevice) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("vmm: bus range %#x+%#x invalid", base, size)
	}
	for _, e := range b.entries {
		if base < e.base+e.size && e.base < base+size {
			return fmt.Errorf("vmm: bus range %#x+%#x overlaps %#x+%#x", base, size, e.base, e.size)
		}
	}
	b.entries = append(b.entries, busEntry{base, size, dev})
	sort.Slice(b.entries, func(i, j int) bool { return b.entries[i].base < b.entries[j].base })
	return nil
}

// find returns the device whose range holds the whole access [addr,
// addr+n), and the offset of addr in it.
func (b *bus) find(addr uint64, n int) (BusDevice, uint64, bool) {
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base+b.entries[i].size > addr })
	if i == len(b.entries) {
		return nil, 0, false
	}
	e := b.entries[i]
	off := addr - e.base
	if addr < e.base || uint64(n) > e.size-off {
		return nil, 0, false
	}
	return e.dev, off, true
}

// read serves a guest read; unclaimed addresses read as all ones, like an
// ISA bus with nothing on it (how Linux probes for absent UARTs).
func (b *bus) read(addr uint64, data []byte) bool {
	if dev, off, ok := b.find(addr, len(data)); ok {
		dev.Read(off, data)
		return true
	}
	for i := range data {
		data[i] = 0xff
	}
	return false
}

// write serves a guest write; unclaimed addresses ignore it.
func (b *bus) write(addr uint64, data []byte) bool {
	if dev, off, ok := b.find(addr, len(data)); ok {
		dev.Write(off, data)
		return true
	}
	return false
}
