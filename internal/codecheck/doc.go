// SPDX-License-Identifier: Apache-2.0

// Package codecheck holds no code: its tests check rules of the code base
// that go vet and staticcheck do not: every Go file starts with an SPDX line,
// every package says what it is in its doc comment, package unsafe appears
// only in *_unsafe.go files, and imports flow one way (root → pkg/sandbox →
// the leaf packages under pkg/, which do not import each other; containers/image
// only in pkg/oci, gVisor only in pkg/netstack).
package codecheck
