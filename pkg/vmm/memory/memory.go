// SPDX-License-Identifier: Apache-2.0

package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// GuestAddr is a guest-physical address.
type GuestAddr uint64

// Region describes one range of guest-physical memory for [New].
type Region struct {
	// Base is the guest-physical address of the first byte. It must be a
	// multiple of the host page size.
	Base GuestAddr
	// Size is the length in bytes. It must be a non-zero multiple of the host
	// page size.
	Size uint64
}

// Mapping is a region of guest-physical memory together with its host backing.
type Mapping struct {
	// Base is the guest-physical address of Data[0].
	Base GuestAddr
	// Data is the host memory that backs the region; len(Data) is its size.
	Data []byte
}

// end returns the first guest address after m. Construction guarantees it
// does not wrap.
func (m Mapping) end() uint64 { return uint64(m.Base) + uint64(len(m.Data)) }

// Memory is guest RAM: a sorted set of non-overlapping mappings.
type Memory struct {
	maps    []Mapping // sorted by Base; immutable after construction
	mmapped bool      // the backing came from unix.Mmap and Close unmaps it

	closeOnce sync.Once
	closeErr  error
}

// New allocates guest RAM for the given regions with anonymous private
// mappings (MAP_NORESERVE: host pages are committed only when first touched).
// Regions must be page aligned, non-empty and non-overlapping; they need not
// be sorted. The caller must call [Memory.Close] to release the mappings.
func New(regions ...Region) (*Memory, error) {
	if len(regions) == 0 {
		return nil, fmt.Errorf("%w: no regions", ErrInvalidRegion)
	}
	page := uint64(unix.Getpagesize())
	for _, r := range regions {
		if uint64(r.Base)%page != 0 || r.Size%page != 0 {
			return nil, fmt.Errorf("%w: %#x+%#x not page aligned", ErrInvalidRegion, uint64(r.Base), r.Size)
		}
		if r.Size > uint64(maxInt) {
			return nil, fmt.Errorf("%w: size %#x too large", ErrInvalidRegion, r.Size)
		}
	}
	maps := make([]Mapping, 0, len(regions))
	m := &Memory{mmapped: true}
	for _, r := range regions {
		if r.Size == 0 {
			break // reported by check below, after unmapping what we have
		}
		b, err := unix.Mmap(-1, 0, int(r.Size), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			m.maps = maps
			_ = m.Close()
			return nil, fmt.Errorf("memory: mmap %#x bytes: %w", r.Size, err)
		}
		maps = append(maps, Mapping{Base: r.Base, Data: b})
	}
	m.maps = maps
	if len(maps) != len(regions) {
		_ = m.Close()
		return nil, fmt.Errorf("%w: empty region", ErrInvalidRegion)
	}
	if err := m.sortAndCheck(); err != nil {
		_ = m.Close()
		return nil, err
	}
	return m, nil
}

// maxInt is the largest value of type int, the limit on a slice length.
const maxInt = int(^uint(0) >> 1)

// NewFromBytes returns guest RAM backed by caller-provided slices, for tests
// and for memory the caller manages itself. The slices are used in place, not
// copied; Close does nothing to them. Mappings must be non-empty and
// non-overlapping; they need not be sorted or aligned.
func NewFromBytes(mappings ...Mapping) (*Memory, error) {
	if len(mappings) == 0 {
		return nil, fmt.Errorf("%w: no regions", ErrInvalidRegion)
	}
	m := &Memory{maps: slices.Clone(mappings)}
	for i := range m.maps {
		// Cap the capacity so that no slice handed out can be extended
		// beyond the region with append.
		d := m.maps[i].Data
		m.maps[i].Data = d[:len(d):len(d)]
	}
	if err := m.sortAndCheck(); err != nil {
		return nil, err
	}
	return m, nil
}

// sortAndCheck sorts m.maps by base and rejects empty, wrapping or
// overlapping mappings.
func (m *Memory) sortAndCheck() error {
	slices.SortFunc(m.maps, func(a, b Mapping) int {
		switch {
		case a.Base < b.Base:
			return -1
		case a.Base > b.Base:
			return 1
		}
		return 0
	})
	for i, mp := range m.maps {
		n := uint64(len(mp.Data))
		if n == 0 {
			return fmt.Errorf("%w: empty region at %#x", ErrInvalidRegion, uint64(mp.Base))
		}
		if uint64(mp.Base) > ^uint64(0)-n {
			// end() must be representable: a region may not reach 2^64.
			return fmt.Errorf("%w: %#x+%#x wraps the address space", ErrInvalidRegion, uint64(mp.Base), n)
		}
		if i > 0 && uint64(mp.Base) < m.maps[i-1].end() {
			return fmt.Errorf("%w: %#x overlaps the region at %#x", ErrInvalidRegion, uint64(mp.Base), uint64(m.maps[i-1].Base))
		}
	}
	return nil
}

// Close releases memory allocated by [New]. It is idempotent; after Close no
// other method may be called and slices obtained earlier must not be used.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		if !m.mmapped {
			return
		}
		var errs []error
		for _, mp := range m.maps {
			if err := unix.Munmap(mp.Data); err != nil {
				errs = append(errs, fmt.Errorf("memory: munmap %#x: %w", uint64(mp.Base), err))
			}
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}

// Mappings returns the regions of guest RAM sorted by base. The returned
// slice is a copy; the Data slices alias guest RAM.
func (m *Memory) Mappings() []Mapping { return slices.Clone(m.maps) }

// Size returns the total number of bytes of guest RAM.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, mp := range m.maps {
		n += uint64(len(mp.Data))
	}
	return n
}

// Slice returns the n bytes of guest RAM starting at addr, aliasing guest
// memory (its capacity is n, so appending to it never writes guest RAM).
// addr and n may come from the guest: the range must lie inside one region,
// checked without overflow, or Slice returns an error wrapping
// [ErrOutOfBounds]. A zero-length slice is valid at any address inside a
// region or one byte past its end.
func (m *Memory) Slice(addr GuestAddr, n uint64) ([]byte, error) {
	for _, mp := range m.maps {
		// addr == end is inside only for an empty access: a non-empty one
		// belongs to the next region if they are adjacent.
		if addr < mp.Base || uint64(addr) > mp.end() || (uint64(addr) == mp.end() && n > 0) {
			continue
		}
		off := uint64(addr - mp.Base)
		// off <= len(Data), so the subtraction cannot wrap.
		if n > uint64(len(mp.Data))-off {
			return nil, outOfBounds(addr, n)
		}
		return mp.Data[off : off+n : off+n], nil
	}
	return nil, outOfBounds(addr, n)
}

// Contains reports whether the n bytes at addr lie inside one region.
func (m *Memory) Contains(addr GuestAddr, n uint64) bool {
	_, err := m.Slice(addr, n)
	return err == nil
}

// Read copies len(p) bytes of guest RAM at addr into p. The range must lie
// inside one region; on error p is left unchanged. Read is not io.Reader:
// it is all or nothing.
func (m *Memory) Read(addr GuestAddr, p []byte) error {
	b, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, b)
	return nil
}

// Write copies p into guest RAM at addr. The range must lie inside one
// region; on error guest RAM is left unchanged.
func (m *Memory) Write(addr GuestAddr, p []byte) error {
	b, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(b, p)
	return nil
}

// Uint8 reads the byte at addr.
func (m *Memory) Uint8(addr GuestAddr) (uint8, error) {
	b, err := m.Slice(addr, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// PutUint8 writes v at addr.
func (m *Memory) PutUint8(addr GuestAddr, v uint8) error {
	b, err := m.Slice(addr, 1)
	if err != nil {
		return err
	}
	b[0] = v
	return nil
}

// Uint16 reads the little-endian uint16 at addr. Virtio structures are
// little-endian (virtio 1.2 §1.4).
func (m *Memory) Uint16(addr GuestAddr) (uint16, error) {
	b, err := m.Slice(addr, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

// PutUint16 writes v little-endian at addr.
func (m *Memory) PutUint16(addr GuestAddr, v uint16) error {
	b, err := m.Slice(addr, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(b, v)
	return nil
}

// Uint32 reads the little-endian uint32 at addr.
func (m *Memory) Uint32(addr GuestAddr) (uint32, error) {
	b, err := m.Slice(addr, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// PutUint32 writes v little-endian at addr.
func (m *Memory) PutUint32(addr GuestAddr, v uint32) error {
	b, err := m.Slice(addr, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b, v)
	return nil
}

// Uint64 reads the little-endian uint64 at addr.
func (m *Memory) Uint64(addr GuestAddr) (uint64, error) {
	b, err := m.Slice(addr, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// PutUint64 writes v little-endian at addr.
func (m *Memory) PutUint64(addr GuestAddr, v uint64) error {
	b, err := m.Slice(addr, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(b, v)
	return nil
}
