// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

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
}

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

// Is reports whether target is e's kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(ErrorKind)
	return ok && k == e.Kind
}

// IsKind reports whether err is or wraps an *Error of kind.
func IsKind(err error, kind ErrorKind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
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
	case errors.Is(err, sandbox.ErrImage):
		kind = ErrImagePullFailed
	case errors.Is(err, sandbox.ErrSpawn):
		kind = ErrExecFailed
	}
	return &Error{Kind: kind, Message: err.Error(), Cause: err}
}
