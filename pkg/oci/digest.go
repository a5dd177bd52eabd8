// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Digest is a content digest in OCI form, "sha256:" followed by 64 lowercase
// hex digits (image-spec descriptor.md "Digests"). Only sha256 is accepted:
// it is what every registry serves and what the store is addressed by.
type Digest string

const sha256Prefix = "sha256:"

// ParseDigest checks that s is a sha256 digest in canonical form.
func ParseDigest(s string) (Digest, error) {
	hexPart, ok := strings.CutPrefix(s, sha256Prefix)
	if !ok {
		return "", fmt.Errorf("oci: digest %q: only sha256 is supported", truncate(s))
	}
	if len(hexPart) != sha256.Size*2 {
		return "", fmt.Errorf("oci: digest %q: want %d hex digits", truncate(s), sha256.Size*2)
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("oci: digest %q: not lowercase hex", truncate(s))
		}
	}
	return Digest(s), nil
}

// FromBytes returns the sha256 digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest(sha256Prefix + hex.EncodeToString(sum[:]))
}

// Hex returns the hex part of d.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), sha256Prefix) }

// String implements fmt.Stringer.
func (d Digest) String() string { return string(d) }

// truncate shortens registry- or user-supplied text for error messages.
func truncate(s string) string {
	const maxLen = 128
	if len(s) > maxLen {
		return s[:maxLen] + "..."
	}
	return s
}
