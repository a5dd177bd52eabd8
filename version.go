// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"os/exec"
	"strings"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// Version is this SDK's and runtime's version. The surface follows
// upstream microsandbox 0.6.14.
const Version = "0.1.0"

// SDKVersion returns the SDK's version.
func SDKVersion() string { return Version }

// RuntimeVersion returns the version the msb binary of the runtime reports
// ("msb VERSION").
func RuntimeVersion() (string, error) {
	rt := sandbox.DefaultRuntime()
	if rt.Binary == "" {
		return "", &Error{Kind: ErrLibraryNotLoaded, Message: "msb binary not found: set MSB_BIN or install the runtime (make build)"}
	}
	out, err := exec.Command(rt.Binary, "version").Output()
	if err != nil {
		return "", &Error{Kind: ErrInternal, Message: "msb version: " + err.Error(), Cause: err}
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "msb "), nil
}

// IsInstalled reports whether the runtime's files (msb, the guest kernel,
// the agent) are where DefaultRuntime finds them.
func IsInstalled() bool {
	rt := sandbox.DefaultRuntime()
	return rt.Check() == nil
}

// SetupOption configures EnsureInstalled and Install.
type SetupOption func(*setupOptions)

type setupOptions struct{}

// WithSkipDownload is accepted for upstream compatibility: this runtime
// never downloads; Install copies the files of a source build.
func WithSkipDownload() SetupOption { return func(*setupOptions) {} }

// Install copies the runtime's files (msb, the guest kernel, the agent, as
// DefaultRuntime finds them: MSB_BIN/MSB_KERNEL/MSB_AGENT or next to this
// executable) into MSB_HOME/bin, where any program embedding the SDK finds
// them. Nothing is downloaded.
func Install(ctx context.Context, opts ...SetupOption) error {
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	_, err := sandbox.Install(sandbox.DefaultRuntime())
	return wrap(err)
}

// EnsureInstalled installs the runtime unless IsInstalled.
func EnsureInstalled(ctx context.Context, opts ...SetupOption) error {
	if IsInstalled() {
		return nil
	}
	return Install(ctx, opts...)
}
