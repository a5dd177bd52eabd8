// SPDX-License-Identifier: Apache-2.0

package erofs

import (
	"fmt"
	"strings"
)

// xattrPrefixes are the short name prefixes of erofs_fs.h
// (EROFS_XATTR_INDEX_*) that Linux maps back to names. Index 5 (lustre.) has
// no handler in Linux and is not offered.
var xattrPrefixes = [...]struct {
	index  uint8
	prefix string
	exact  bool // the prefix is the whole name (POSIX ACLs)
}{
	{1, "user.", false},
	{2, "system.posix_acl_access", true},
	{3, "system.posix_acl_default", true},
	{4, "trusted.", false},
	{6, "security.", false},
}

// maxXattrValue is the largest e_value_size (u16); Linux allows up to 65536
// (XATTR_SIZE_MAX), so a 65536-byte value is not representable.
const maxXattrValue = 1<<16 - 1

// maxXattrBody is the largest inline xattr area i_xattr_icount (u16) can
// describe: 12 + (65535-1)*4 bytes.
const maxXattrBody = XattrIbodyHeaderSize + (1<<16-2)*4

// Xattr is one extended attribute with its full name ("user.comment",
// "security.capability").
type Xattr struct {
	Name  string
	Value string
}

// splitXattr returns the prefix index of name and the rest of the name.
func splitXattr(name string) (uint8, string, bool) {
	for _, p := range xattrPrefixes {
		if p.exact {
			if name == p.prefix {
				return p.index, "", true
			}
			continue
		}
		if rest, ok := strings.CutPrefix(name, p.prefix); ok && rest != "" {
			return p.index, rest, true
		}
	}
	return 0, "", false
}

// CheckXattr reports whether an extended attribute can be stored in an
// image; the error wraps [ErrUnsupportedXattr].
func CheckXattr(name, value string) error {
	_, rest, ok := splitXattr(name)
	switch {
	case !ok:
		return fmt.Errorf("%w: %q: no EROFS name prefix", ErrUnsupportedXattr, name)
	case len(rest) > MaxNameLen:
		return fmt.Errorf("%w: %q: name longer than %d bytes", ErrUnsupportedXattr, name, MaxNameLen)
	case len(value) > maxXattrValue:
		return fmt.Errorf("%w: %q: value of %d bytes exceeds %d", ErrUnsupportedXattr, name, len(value), maxXattrValue)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%w: %q: NUL in name", ErrUnsupportedXattr, name)
	}
	return nil
}

// encodeXattrs returns the inline xattr area (erofs_xattr_ibody_header and
// the entries, sorted by name) and its i_xattr_icount, or nil and 0 when
// there are no xattrs.
func encodeXattrs(xs []Xattr) ([]byte, uint16, error) {
	if len(xs) == 0 {
		return nil, 0, nil
	}
	size := XattrIbodyHeaderSize
	for _, x := range xs {
		if err := CheckXattr(x.Name, x.Value); err != nil {
			return nil, 0, err
		}
		_, rest, _ := splitXattr(x.Name)
		size += align(XattrEntrySize+len(rest)+len(x.Value), 4)
	}
	if size > maxXattrBody {
		return nil, 0, fmt.Errorf("%w: %d bytes of xattrs on one inode exceed %d", ErrUnsupportedXattr, size, maxXattrBody)
	}
	b := make([]byte, XattrIbodyHeaderSize, size)
	seen := make(map[string]bool, len(xs))
	for _, x := range xs {
		if seen[x.Name] {
			return nil, 0, fmt.Errorf("%w: duplicate xattr %q", ErrInvalidTree, x.Name)
		}
		seen[x.Name] = true
		idx, rest, _ := splitXattr(x.Name)
		e := len(b)
		b = append(b, make([]byte, XattrEntrySize)...)
		b[e] = uint8(len(rest))
		b[e+1] = idx
		le.PutUint16(b[e+2:], uint16(len(x.Value)))
		b = append(b, rest...)
		b = append(b, x.Value...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b, uint16((size-XattrIbodyHeaderSize)/4 + 1), nil
}

func align(n, a int) int { return (n + a - 1) / a * a }
