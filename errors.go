// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/oci"
	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// isRemote reports a failure the guest reported for a file operation.
func isRemote(err error) bool {
	var re *guestagent.RemoteError
	return errors.As(err, &re)
}

// ErrorKind classifies an *Error. An ErrorKind is itself an error, so
// errors.Is(err, ErrSandboxNotFound) matches an *Error of that kind.
type ErrorKind int

// Error kinds (upstream-api.md §1.19).
const (
	ErrUnknown ErrorKind = iota
	ErrSandboxNotFound
	ErrSandboxNotRunning
	ErrSandboxAlreadyExists
	ErrSandboxStillRunning
	ErrExecTimeout
	ErrExecFailed
	ErrImageNotFound
	ErrImagePullFailed
	ErrIO
	ErrInvalidConfig
	ErrInvalidArgument
	ErrInvalidHandle
	ErrCancelled
	ErrInternal
	ErrFilesystem
	ErrPathNotFound
	ErrNoDefaultCommand
	ErrMetricsUnavailable
	ErrVolumeNotFound
	ErrVolumeAlreadyExists
	ErrImageInUse
	ErrPatchFailed
	ErrUnsupportedOperation
	ErrLibraryNotLoaded
)

var kindNames = [...]string{
	ErrUnknown:              "Unknown",
	ErrSandboxNotFound:      "SandboxNotFound",
	ErrSandboxNotRunning:    "SandboxNotRunning",
	ErrSandboxAlreadyExists: "SandboxAlreadyExists",
	ErrSandboxStillRunning:  "SandboxStillRunning",
	ErrExecTimeout:          "ExecTimeout",
	ErrExecFailed:           "ExecFailed",
	ErrImageNotFound:        "ImageNotFound",
	ErrImagePullFailed:      "ImagePullFailed",
	ErrIO:                   "IO",
	ErrInvalidConfig:        "InvalidConfig",
	ErrInvalidArgument:      "InvalidArgument",
	ErrInvalidHandle:        "InvalidHandle",
	ErrCancelled:            "Cancelled",
	ErrInternal:             "Internal",
	ErrFilesystem:           "Filesystem",
	ErrPathNotFound:         "PathNotFound",
	ErrNoDefaultCommand:     "NoDefaultCommand",
	ErrMetricsUnavailable:   "MetricsUnavailable",
	ErrVolumeNotFound:       "VolumeNotFound",
	ErrVolumeAlreadyExists:  "VolumeAlreadyExists",
	ErrImageInUse:           "ImageInUse",
	ErrPatchFailed:          "PatchFailed",
	ErrUnsupportedOperation: "UnsupportedOperation",
	ErrLibraryNotLoaded:     "LibraryNotLoaded",
}

// ErrPathEscape reports a host path (CopyToHost, CopyFromHost, a bind
// mount) or guest path that leaves the directory it must stay in.
var ErrPathEscape = errors.New("microsandbox: path escapes volume root")

// String returns the kind's name.
func (k ErrorKind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// Error implements error, so that a kind can be the target of errors.Is.
func (k ErrorKind) Error() string { return "microsandbox: " + k.String() }

// Error is the error type of every call of this package.
type Error struct {
	Kind    ErrorKind
	Message string
	Cause   error
}

// Error returns the message, else the cause's, else the kind's.
func (e *Error) Error() string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Cause != nil:
		return e.Cause.Error()
	}
	return e.Kind.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// Is reports whether target is e's kind. A file system error about a
// missing path is also ErrPathNotFound.
func (e *Error) Is(target error) bool {
	k, ok := target.(ErrorKind)
	if !ok {
		return false
	}
	if k == ErrPathNotFound && e.Kind == ErrFilesystem {
		return errors.Is(e.Cause, fs.ErrNotExist)
	}
	return k == e.Kind
}

// IsKind reports whether err is or wraps an *Error of kind (see Is).
func IsKind(err error, kind ErrorKind) bool {
	return errors.Is(err, kind)
}

// wrap maps an error from below to *Error once, at the package boundary.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	kind := ErrInternal
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		kind = ErrCancelled
	case errors.Is(err, sandbox.ErrInvalidConfig):
		kind = ErrInvalidConfig
	case errors.Is(err, sandbox.ErrNotFound):
		kind = ErrSandboxNotFound
	case errors.Is(err, sandbox.ErrAlreadyExists):
		kind = ErrSandboxAlreadyExists
	case errors.Is(err, sandbox.ErrStillRunning):
		kind = ErrSandboxStillRunning
	case errors.Is(err, sandbox.ErrNotRunning):
		kind = ErrSandboxNotRunning
	case errors.Is(err, sandbox.ErrClosed):
		kind = ErrInvalidHandle
	case errors.Is(err, sandbox.ErrImage) && errors.Is(err, oci.ErrNotFound):
		kind = ErrImageNotFound
	case errors.Is(err, sandbox.ErrImage):
		kind = ErrImagePullFailed
	case errors.Is(err, guestagent.ErrTimeout):
		kind = ErrExecTimeout
	case errors.Is(err, sandbox.ErrSpawn):
		kind = ErrExecFailed
	case errors.Is(err, sandbox.ErrPatchFailed):
		kind = ErrPatchFailed
	case errors.Is(err, sandbox.ErrVolumeNotFound):
		kind = ErrVolumeNotFound
	case errors.Is(err, sandbox.ErrVolumeExists):
		kind = ErrVolumeAlreadyExists
	case errors.Is(err, sandbox.ErrVolumeInUse):
		kind = ErrInvalidConfig
	case errors.Is(err, sandbox.ErrMetricsUnavailable):
		kind = ErrMetricsUnavailable
	case isRemote(err):
		kind = ErrFilesystem
	}
	return &Error{Kind: kind, Message: err.Error(), Cause: err}
}
