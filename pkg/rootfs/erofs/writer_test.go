// SPDX-License-Identifier: Apache-2.0

package erofs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestDevRoundTrip(t *testing.T) {
	for _, d := range [][2]uint32{{0, 0}, {1, 3}, {8, 1}, {259, 70000}, {4095, 1<<20 - 1}} {
		ma, mi := DecodeDev(encodeDev(d[0], d[1]))
		if ma != d[0] || mi != d[1] {
			t.Errorf("DecodeDev(encodeDev(%d, %d)) = %d, %d", d[0], d[1], ma, mi)
		}
	}
	// new_encode_dev(MKDEV(8, 1)) from include/linux/kdev_t.h.
	if got := encodeDev(8, 1); got != 0x801 {
		t.Errorf("encodeDev(8, 1) = %#x, want 0x801", got)
	}
}

func TestSuperBlockLayout(t *testing.T) {
	var buf bytes.Buffer
	root := &Inode{Mode: ModeDir | 0o755, Mtime: 42}
	st, err := Write(context.Background(), &buf, root, Options{VolumeName: "vol", UUID: [16]byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	img := buf.Bytes()
	if len(img) != BlockSize || st.Blocks != 1 {
		t.Fatalf("image of %d bytes, %d blocks; want one block", len(img), st.Blocks)
	}
	sb := SuperBlock(img[SuperBlockOffset : SuperBlockOffset+SuperBlockSize])
	if sb.Magic() != Magic || sb.BlkSzBits() != 12 || sb.RootNid() != 36 || sb.Inos() != 1 || sb.Blocks() != 1 {
		t.Errorf("superblock magic %#x blkszbits %d root %d inos %d blocks %d", sb.Magic(), sb.BlkSzBits(), sb.RootNid(), sb.Inos(), sb.Blocks())
	}
	if sec, _ := sb.BuildTime(); sec != 42 {
		t.Errorf("build time = %d, want 42", sec)
	}
	if string(bytes.TrimRight(sb.VolumeName(), "\x00")) != "vol" || sb.UUID()[0] != 1 {
		t.Errorf("volume name %q uuid %x", sb.VolumeName(), sb.UUID())
	}
	// The root: compact, inline, ".." and "." only: 24 bytes of dirents + 3 of names.
	ic := InodeCompact(img[36*SlotSize:])
	if ic.Format() != formatCompact|layoutFlatInline<<1 || ic.Mode() != ModeDir|0o755 || ic.Nlink() != 2 || ic.Size() != 27 {
		t.Errorf("root inode format %#x mode %#o nlink %d size %d", ic.Format(), ic.Mode(), ic.Nlink(), ic.Size())
	}
	d := Dirent(img[36*SlotSize+InodeCompactSize:])
	if d.Nid() != 36 || d.NameOff() != 24 || d.FileType() != ftDir {
		t.Errorf("first dirent nid %d nameoff %d type %d", d.Nid(), d.NameOff(), d.FileType())
	}
}

func TestXattrEncoding(t *testing.T) {
	b, icount, err := encodeXattrs([]Xattr{{"user.ab", "xyz"}, {"system.posix_acl_access", "A"}})
	if err != nil {
		t.Fatal(err)
	}
	// 12 header + align4(4+2+3)=12 + align4(4+0+1)=8.
	if len(b) != 32 || icount != (32-12)/4+1 {
		t.Fatalf("encodeXattrs = %d bytes icount %d, want 32 and 6", len(b), icount)
	}
	e := XattrEntry(b[12:])
	if e.NameLen() != 2 || e.NameIndex() != 1 || e.ValueSize() != 3 || string(b[16:21]) != "abxyz" {
		t.Errorf("first entry %x", b[12:24])
	}
	e = XattrEntry(b[24:])
	if e.NameLen() != 0 || e.NameIndex() != 2 || e.ValueSize() != 1 {
		t.Errorf("acl entry %x", b[24:32])
	}
}

func TestCheckXattr(t *testing.T) {
	cases := []struct {
		name, value string
		ok          bool
	}{
		{"user.a", "", true},
		{"trusted.overlay.opaque", "y", true},
		{"security.capability", "x", true},
		{"system.posix_acl_default", "x", true},
		{"user.", "x", false},
		{"system.other", "x", false},
		{"lustre.x", "x", false},
		{"user." + strings.Repeat("n", 256), "", false},
		{"user.big", strings.Repeat("v", 65536), false},
	}
	for _, tc := range cases {
		err := CheckXattr(tc.name, tc.value)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrUnsupportedXattr)) {
			t.Errorf("CheckXattr(%q, %d bytes) = %v, want ok %v", tc.name, len(tc.value), err, tc.ok)
		}
	}
}

func TestWriteInvalid(t *testing.T) {
	f := &Inode{Mode: ModeRegular | 0o644}
	d := &Inode{Mode: ModeDir | 0o755}
	cases := []struct {
		name string
		root *Inode
		want error
	}{
		{"nil root", nil, ErrInvalidTree},
		{"root not dir", f, ErrInvalidTree},
		{"duplicate", &Inode{Mode: ModeDir, Entries: []Entry{{"a", f}, {"a", &Inode{Mode: ModeRegular}}}}, ErrInvalidTree},
		{"dir twice", &Inode{Mode: ModeDir, Entries: []Entry{{"a", d}, {"b", d}}}, ErrInvalidTree},
		{"slash", &Inode{Mode: ModeDir, Entries: []Entry{{"a/b", f}}}, ErrInvalidTree},
		{"dotdot", &Inode{Mode: ModeDir, Entries: []Entry{{"..", f}}}, ErrInvalidTree},
		{"long", &Inode{Mode: ModeDir, Entries: []Entry{{strings.Repeat("x", 256), f}}}, ErrInvalidTree},
		{"no type", &Inode{Mode: ModeDir, Entries: []Entry{{"a", &Inode{Mode: 0o644}}}}, ErrInvalidTree},
		{"size without data", &Inode{Mode: ModeDir, Entries: []Entry{{"a", &Inode{Mode: ModeRegular, Size: 5}}}}, ErrInvalidTree},
		{"empty symlink", &Inode{Mode: ModeDir, Entries: []Entry{{"a", &Inode{Mode: ModeSymlink}}}}, ErrInvalidTree},
		{"bad xattr", &Inode{Mode: ModeDir, Xattrs: []Xattr{{"foo.bar", ""}}}, ErrUnsupportedXattr},
		{"short data", &Inode{Mode: ModeDir, Entries: []Entry{{"a", &Inode{Mode: ModeRegular, Size: 10, Data: strings.NewReader("abc")}}}}, ErrShortData},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Write(context.Background(), io.Discard, tc.root, Options{})
			if !errors.Is(err, tc.want) {
				t.Errorf("Write = %v, want %v", err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "erofs: ") {
				t.Errorf("error %q lacks the erofs: prefix", err)
			}
		})
	}
}

// TestPlacement checks that no inline tail crosses a block and no inode core
// does, over many file sizes and xattr sizes.
func TestPlacement(t *testing.T) {
	root := &Inode{Mode: ModeDir | 0o755}
	for i := range 300 {
		size := (i * 997) % 9000
		in := &Inode{Mode: ModeRegular | 0o644, Size: int64(size), Data: bytes.NewReader(make([]byte, size)), Mtime: int64(i % 3)}
		if i%7 == 0 {
			in.Xattrs = []Xattr{{"user.x", strings.Repeat("v", i*13%3000)}}
		}
		root.Entries = append(root.Entries, Entry{Name: string(rune('a'+i%26)) + strings.Repeat("z", i%200), Inode: in})
	}
	ws, err := collect(root)
	if err != nil {
		t.Fatal(err)
	}
	pos := int64(SuperBlockOffset + SuperBlockSize)
	for _, w := range ws {
		if err := prepare(w, 0, 0); err != nil {
			t.Fatal(err)
		}
		pos = place(w, pos)
		if w.pos%SlotSize != 0 || w.pos%BlockSize+w.isize() > BlockSize {
			t.Errorf("inode %d at %d crosses a block", w.ino, w.pos)
		}
		if tail := w.tail(); tail > 0 {
			start := w.pos + w.isize() + int64(len(w.xattrs))
			if start%BlockSize+tail > BlockSize {
				t.Errorf("inode %d: tail [%d,+%d) crosses a block", w.ino, start, tail)
			}
		}
	}
}
