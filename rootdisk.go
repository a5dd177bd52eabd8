// SPDX-License-Identifier: Apache-2.0

package microsandbox

import "github.com/microsandbox-go/microsandbox/pkg/sandbox"

// RootDiskKind is the kind of a root disk.
type RootDiskKind string

// Root disk kinds.
const (
	// RootDiskKindManaged: a sparse ext4 disk in the sandbox's directory,
	// kept across Stop and StartSandbox (the default).
	RootDiskKindManaged RootDiskKind = sandbox.RootDiskManaged
	// RootDiskKindTmpfs: guest memory, pristine at every boot.
	RootDiskKindTmpfs RootDiskKind = sandbox.RootDiskTmpfs
)

// RootDiskConfig is the sandbox's writable layer over its image. Build it
// with RootDisk.
type RootDiskConfig struct {
	kind    RootDiskKind
	sizeMiB uint32
}

// Kind returns the root disk's kind.
func (c RootDiskConfig) Kind() RootDiskKind { return c.kind }

// SizeMiB returns the configured size; zero means the default.
func (c RootDiskConfig) SizeMiB() uint32 { return c.sizeMiB }

// RootDiskTmpfsOptions configures RootDisk.Tmpfs.
type RootDiskTmpfsOptions struct {
	// SizeMiB limits the layer; zero means half the guest memory.
	SizeMiB uint32
}

type rootDiskFactory struct{}

// RootDisk builds root disk configurations.
var RootDisk rootDiskFactory

// Managed is a sparse ext4 disk of sizeMiB (zero: 4096) in the sandbox's
// directory; writes survive Stop and StartSandbox.
func (rootDiskFactory) Managed(sizeMiB uint32) RootDiskConfig {
	return RootDiskConfig{kind: RootDiskKindManaged, sizeMiB: sizeMiB}
}

// Tmpfs keeps the writable layer in guest memory; it is lost when the
// sandbox stops.
func (rootDiskFactory) Tmpfs(o RootDiskTmpfsOptions) RootDiskConfig {
	return RootDiskConfig{kind: RootDiskKindTmpfs, sizeMiB: o.SizeMiB}
}

// WithRootDisk sets the writable layer; default RootDisk.Managed(4096).
func WithRootDisk(d RootDiskConfig) SandboxOption {
	return func(c *SandboxConfig) { c.RootDisk = &d }
}

// WithOCIUpperSize is the deprecated spelling of
// WithRootDisk(RootDisk.Managed(mib)).
func WithOCIUpperSize(mib uint32) SandboxOption {
	return WithRootDisk(RootDisk.Managed(mib))
}
