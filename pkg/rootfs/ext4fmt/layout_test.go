// SPDX-License-Identifier: Apache-2.0

package ext4fmt

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHasSuper(t *testing.T) {
	// Groups below 400 with a backup under sparse_super, as listed by
	// dumpe2fs for a large mke2fs -O sparse_super image.
	want := map[uint32]bool{0: true, 1: true, 3: true, 5: true, 7: true, 9: true, 25: true,
		27: true, 49: true, 81: true, 125: true, 243: true, 343: true}
	for g := range uint32(400) {
		if got := hasSuper(g); got != want[g] {
			t.Errorf("hasSuper(%d) = %v, want %v", g, got, want[g])
		}
	}
}

func TestLayout(t *testing.T) {
	tests := []struct {
		name                            string
		size, ratio                     int64
		blocks, groups, ipg, gdt, itabl uint32
	}{
		// mke2fs -b 4096 -I 256 -O ^flex_bg,^resize_inode gives the same
		// counts for these sizes.
		{"16MiB", 16 << 20, DefaultInodeRatio, 4096, 1, 1024, 1, 64},
		{"1GiB", 1 << 30, DefaultInodeRatio, 262144, 8, 8192, 1, 512},
		{"4GiB", 4 << 30, DefaultInodeRatio, 1048576, 32, 8192, 1, 512},
		{"odd", 1000<<20 + 4096 + 123, DefaultInodeRatio, 256001, 8, 8000, 1, 500},
		// A last group of 10 blocks cannot hold its 2+512 metadata blocks.
		// mke2fs drops it too but sizes the inode tables before (8208).
		{"dropped last group", 128<<20 + 10*blockSize, DefaultInodeRatio, 32768, 1, 8192, 1, 512},
		{"short last group kept", 256<<20 + 600*blockSize, DefaultInodeRatio, 66136, 3, 5520, 1, 345},
		{"one inode per block", 1 << 30, MinInodeRatio, 262144, 8, 32768, 1, 2048},
		{"16TiB", MaxSize, DefaultInodeRatio, maxBlocks, 131072, 8192, 1024, 512},
		{"16TiB one inode per block", MaxSize, MinInodeRatio, maxBlocks, 131072, 32752, 1024, 2047},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := newLayout(tt.size, tt.ratio)
			if err != nil {
				t.Fatal(err)
			}
			if l.blocks != tt.blocks || l.groups != tt.groups || l.inodesPerGroup != tt.ipg ||
				l.gdtBlocks != tt.gdt || l.itableBlocks != tt.itabl {
				t.Errorf("newLayout(%d, %d) = %+v, want blocks %d groups %d ipg %d gdt %d itable %d",
					tt.size, tt.ratio, l, tt.blocks, tt.groups, tt.ipg, tt.gdt, tt.itabl)
			}
			if uint64(l.inodes()) != uint64(l.groups)*uint64(l.inodesPerGroup) {
				t.Errorf("inodes() = %d overflows", l.inodes())
			}
			var sum uint64
			for g := range l.groups {
				if l.usedBlocks(g) > l.groupBlocks(g) {
					t.Errorf("group %d: %d blocks used of %d", g, l.usedBlocks(g), l.groupBlocks(g))
				}
				sum += uint64(l.groupBlocks(g))
			}
			if sum != uint64(l.blocks) {
				t.Errorf("groups hold %d blocks, want %d", sum, l.blocks)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		size int64
		opts Options
		want []error
	}{
		{"defaults", 16 << 20, Options{}, nil},
		{"limits", MaxSize, Options{Label: strings.Repeat("x", MaxLabelLen), InodeRatio: MaxInodeRatio}, nil},
		{"too small", MinSize - 1, Options{}, []error{ErrInvalidSize}},
		{"too large", MaxSize + 1, Options{}, []error{ErrInvalidSize}},
		{"negative", -1, Options{}, []error{ErrInvalidSize}},
		{"long label", 16 << 20, Options{Label: strings.Repeat("x", MaxLabelLen+1)}, []error{ErrInvalidLabel}},
		{"nul label", 16 << 20, Options{Label: "a\x00b"}, []error{ErrInvalidLabel}},
		{"ratio", 16 << 20, Options{InodeRatio: 1024}, []error{ErrInvalidSize}},
		{"all", 0, Options{Label: strings.Repeat("x", 17)}, []error{ErrInvalidSize, ErrInvalidLabel}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.validate(tt.size)
			if len(tt.want) == 0 && err != nil {
				t.Fatalf("validate(%d) = %v, want nil", tt.size, err)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("validate(%d) = %v, want %v", tt.size, err, w)
				}
			}
		})
	}
}

func TestSetBits(t *testing.T) {
	for _, r := range [][2]uint32{{0, 0}, {0, 11}, {3, 5}, {7, 17}, {8, 16}, {0, 8 * blockSize}, {8016, 8 * blockSize}} {
		b := make([]byte, blockSize)
		setBits(b, r[0], r[1])
		for i := range uint32(8 * blockSize) {
			got := b[i/8]&(1<<(i%8)) != 0
			if want := i >= r[0] && i < r[1]; got != want {
				t.Fatalf("setBits(%d, %d): bit %d = %v, want %v", r[0], r[1], i, got, want)
			}
		}
	}
}

func TestInodeTime(t *testing.T) {
	tests := []struct {
		t          time.Time
		sec, extra uint32
	}{
		{time.Unix(1, 5), 1, 5 << 2},
		{time.Unix(-1, 0), 0xFFFFFFFF, 0}, // 1969: the signed 32-bit field
		{time.Unix(1<<31, 0), 1 << 31, 1}, // 2038-01-19: first second of epoch 1
		{time.Unix(1<<32+7, 999999999), 7, 1 | 999999999<<2},
	}
	for _, tt := range tests {
		sec, extra := inodeTime(tt.t)
		if sec != tt.sec || extra != tt.extra {
			t.Errorf("inodeTime(%d) = %#x, %#x, want %#x, %#x", tt.t.Unix(), sec, extra, tt.sec, tt.extra)
		}
	}
}

func TestCRC16(t *testing.T) {
	// Check values of CRC-16/ARC (init 0) and CRC-16/MODBUS (init 0xFFFF),
	// the two presets of the reflected 0x8005 polynomial Linux's crc16 uses.
	if got := crc16(0, []byte("123456789")); got != 0xBB3D {
		t.Errorf("crc16(0, 123456789) = %#x, want 0xbb3d", got)
	}
	if got := crc16(0xFFFF, []byte("123456789")); got != 0x4B37 {
		t.Errorf("crc16(0xffff, 123456789) = %#x, want 0x4b37", got)
	}
}
