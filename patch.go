// SPDX-License-Identifier: Apache-2.0

package microsandbox

import "github.com/microsandbox-go/microsandbox/pkg/sandbox"

// PatchKind is the kind of a rootfs patch; the values are upstream's wire
// names.
type PatchKind string

// Patch kinds.
const (
	PatchKindText     PatchKind = "text"
	PatchKindFile     PatchKind = "file"
	PatchKindAppend   PatchKind = "append"
	PatchKindMkdir    PatchKind = "mkdir"
	PatchKindRemove   PatchKind = "remove"
	PatchKindSymlink  PatchKind = "symlink"
	PatchKindCopyFile PatchKind = "copy_file"
	PatchKindCopyDir  PatchKind = "copy_dir"
)

// PatchConfig is one change to the sandbox's root filesystem, made in its
// writable layer before the first command runs; build it with Patch.
//
// Guest paths are absolute and clean, not "/", and not in /proc, /sys or
// /dev. Text, File, CopyFile and Symlink fail on an existing path unless
// Replace (a directory is never replaced); Append needs an existing file;
// Mkdir and Remove are idempotent; CopyDir merges into an existing
// directory. Host files are read by CreateSandbox. A patch that cannot be
// applied in the guest fails CreateSandbox with the patch named in the
// error. The agent writes /etc/hosts and /etc/hostname after the patches,
// and a patch under /tmp lands in the sandbox's /tmp tmpfs.
type PatchConfig struct {
	Kind    PatchKind
	Path    string
	Content string
	// Data is the content of a File patch (raw bytes; upstream's Go SDK
	// has no File, its other SDKs do).
	Data    []byte
	Mode    *uint32
	Replace bool
	Src     string
	Dst     string
	Target  string
	Link    string
}

// PatchOptions tunes the Patch factory methods that take a mode or the
// replace flag; each method says which fields it uses.
type PatchOptions struct {
	// Mode is the permission bits (at most 07777); nil means 0644 for
	// files, 0755 for directories, the host file's for CopyFile.
	Mode    *uint32
	Replace bool
}

// patchFactory is the namespace of the Patch value.
type patchFactory struct{}

// Patch is the factory namespace for PatchConfig values:
//
//	microsandbox.WithPatches(
//	    microsandbox.Patch.Text("/etc/greeting.txt", "Hello!\n"),
//	    microsandbox.Patch.Mkdir("/app", microsandbox.PatchOptions{}),
//	)
//
// The options are variadic so that upstream's calls, which always pass a
// PatchOptions, compile unchanged; only the first is used.
var Patch patchFactory

func firstOpts(opts []PatchOptions) PatchOptions {
	if len(opts) == 0 {
		return PatchOptions{}
	}
	return opts[0]
}

// Text writes content to the file path.
func (patchFactory) Text(path, content string, opts ...PatchOptions) PatchConfig {
	o := firstOpts(opts)
	return PatchConfig{Kind: PatchKindText, Path: path, Content: content, Mode: o.Mode, Replace: o.Replace}
}

// File writes data to the file path.
func (patchFactory) File(path string, data []byte, opts ...PatchOptions) PatchConfig {
	o := firstOpts(opts)
	return PatchConfig{Kind: PatchKindFile, Path: path, Data: data, Mode: o.Mode, Replace: o.Replace}
}

// Append appends content to the existing file path (one made by an
// earlier patch counts).
func (patchFactory) Append(path, content string) PatchConfig {
	return PatchConfig{Kind: PatchKindAppend, Path: path, Content: content}
}

// Mkdir creates the directory path and its parents. Only Mode is used.
func (patchFactory) Mkdir(path string, opts ...PatchOptions) PatchConfig {
	return PatchConfig{Kind: PatchKindMkdir, Path: path, Mode: firstOpts(opts).Mode}
}

// Remove removes path and everything below it, if it exists.
func (patchFactory) Remove(path string) PatchConfig {
	return PatchConfig{Kind: PatchKindRemove, Path: path}
}

// Symlink creates the symbolic link link -> target. Only Replace is used.
func (patchFactory) Symlink(target, link string, opts ...PatchOptions) PatchConfig {
	return PatchConfig{Kind: PatchKindSymlink, Target: target, Link: link, Replace: firstOpts(opts).Replace}
}

// CopyFile copies the host file src to dst in the sandbox.
func (patchFactory) CopyFile(src, dst string, opts ...PatchOptions) PatchConfig {
	o := firstOpts(opts)
	return PatchConfig{Kind: PatchKindCopyFile, Src: src, Dst: dst, Mode: o.Mode, Replace: o.Replace}
}

// CopyDir copies the host directory src into dst in the sandbox, with the
// modes of its files and directories; symlinks below src are copied as
// symlinks, never followed. Only Replace is used (for its files and
// links).
func (patchFactory) CopyDir(src, dst string, opts ...PatchOptions) PatchConfig {
	return PatchConfig{Kind: PatchKindCopyDir, Src: src, Dst: dst, Replace: firstOpts(opts).Replace}
}

// WithPatches adds rootfs patches, applied in order; repeated calls
// append.
func WithPatches(patches ...PatchConfig) SandboxOption {
	return func(c *SandboxConfig) { c.Patches = append(c.Patches, patches...) }
}

// sandboxPatches converts patches for pkg/sandbox, which validates them.
func sandboxPatches(patches []PatchConfig) []sandbox.Patch {
	var out []sandbox.Patch
	for _, p := range patches {
		out = append(out, sandbox.Patch{
			Kind: sandbox.PatchKind(p.Kind), Path: p.Path, Content: p.Content, Data: p.Data,
			Mode: p.Mode, Replace: p.Replace, Src: p.Src, Dst: p.Dst, Target: p.Target, Link: p.Link,
		})
	}
	return out
}
