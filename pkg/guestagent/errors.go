// SPDX-License-Identifier: Apache-2.0

package guestagent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"unicode"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// Sentinel errors. Callers branch on them with errors.Is; the typed errors
// below match them.
var (
	// ErrProtocol reports a peer that broke the protocol: a malformed or
	// oversized frame, data beyond the window, a frame for a stream that
	// does not exist. The connection is closed.
	ErrProtocol = errors.New("guestagent: protocol error")
	// ErrFrameTooLarge reports a frame over the receiver's maximum size.
	ErrFrameTooLarge = errors.New("guestagent: frame too large")
	// ErrIncompatible reports a handshake whose version ranges do not meet.
	ErrIncompatible = errors.New("guestagent: incompatible protocol version")
	// ErrClosed reports a call on a closed client, server or stream.
	ErrClosed = errors.New("guestagent: connection closed")

	// ErrNotFound reports a missing path (ENOENT).
	ErrNotFound = errors.New("guestagent: not found")
	// ErrExist reports a path that already exists (EEXIST).
	ErrExist = errors.New("guestagent: already exists")
	// ErrNotDir reports a path component that is not a directory (ENOTDIR).
	ErrNotDir = errors.New("guestagent: not a directory")
	// ErrIsDir reports a directory where a file was needed (EISDIR).
	ErrIsDir = errors.New("guestagent: is a directory")
	// ErrNotEmpty reports a non-empty directory (ENOTEMPTY).
	ErrNotEmpty = errors.New("guestagent: directory not empty")
	// ErrPermission reports EACCES or EPERM.
	ErrPermission = errors.New("guestagent: permission denied")
	// ErrInvalid reports a request the guest rejected as malformed.
	ErrInvalid = errors.New("guestagent: invalid argument")
	// ErrUnavailable reports a guest that cannot serve the request now.
	ErrUnavailable = errors.New("guestagent: unavailable")
	// ErrIO reports any other failure in the guest.
	ErrIO = errors.New("guestagent: i/o error")

	// ErrSpawn reports a process that never started; *SpawnError matches it.
	ErrSpawn = errors.New("guestagent: process did not start")
	// ErrTimeout reports an exec killed by the guest at its deadline.
	ErrTimeout = errors.New("guestagent: exec timed out")
)

// ProtocolError is a protocol violation by the peer. It matches ErrProtocol
// and unwraps to a more specific sentinel (ErrFrameTooLarge) when there is
// one.
type ProtocolError struct {
	Reason string
	Err    error
}

func (e *ProtocolError) Error() string { return "guestagent: protocol error: " + e.Reason }

// Is reports whether target is ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

// Unwrap returns the specific sentinel, if any.
func (e *ProtocolError) Unwrap() error { return e.Err }

func protocolErrorf(err error, format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...), Err: err}
}

// ProtocolErrorf returns a *ProtocolError; the host and guest packages use it
// for violations they detect above the framing.
func ProtocolErrorf(format string, args ...any) error {
	return protocolErrorf(nil, format, args...)
}

// RemoteError is a failure the guest reported for an operation. It matches
// the sentinel of its class (ErrNotFound, ...) and the io/fs equivalents
// (fs.ErrNotExist, fs.ErrExist, fs.ErrPermission).
type RemoteError struct {
	Op      string        // "stat", "read", "exec", ...
	Path    string        // the path the guest named, if any
	Err     error         // one of the sentinels above
	Errno   syscall.Errno // the guest's errno, 0 if none
	Message string        // the guest's message, sanitised
}

func (e *RemoteError) Error() string {
	var b strings.Builder
	b.WriteString("guestagent: ")
	b.WriteString(e.Op)
	if e.Path != "" {
		b.WriteString(" ")
		b.WriteString(e.Path)
	}
	b.WriteString(": ")
	b.WriteString(strings.TrimPrefix(e.Err.Error(), "guestagent: "))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap returns the class sentinel.
func (e *RemoteError) Unwrap() error { return e.Err }

// Is matches the io/fs sentinels of the class.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return e.Err == ErrNotFound
	case fs.ErrExist:
		return e.Err == ErrExist
	case fs.ErrPermission:
		return e.Err == ErrPermission
	}
	return false
}

// SpawnKind says why a process did not start. The values are upstream's
// ExecFailureKind spellings.
type SpawnKind string

// Spawn failure kinds.
const (
	SpawnNotFound         SpawnKind = "not_found"
	SpawnPermissionDenied SpawnKind = "permission_denied"
	SpawnNotExecutable    SpawnKind = "not_executable"
	SpawnBadCwd           SpawnKind = "bad_cwd"
	SpawnBadArgs          SpawnKind = "bad_args"
	SpawnResourceLimit    SpawnKind = "resource_limit"
	SpawnUserSetupFailed  SpawnKind = "user_setup_failed"
	SpawnPtySetupFailed   SpawnKind = "pty_setup_failed"
	SpawnOther            SpawnKind = "other"
)

var spawnKinds = map[agentpb.SpawnKind]SpawnKind{
	agentpb.SpawnKind_SPAWN_NOT_FOUND:         SpawnNotFound,
	agentpb.SpawnKind_SPAWN_PERMISSION_DENIED: SpawnPermissionDenied,
	agentpb.SpawnKind_SPAWN_NOT_EXECUTABLE:    SpawnNotExecutable,
	agentpb.SpawnKind_SPAWN_BAD_CWD:           SpawnBadCwd,
	agentpb.SpawnKind_SPAWN_BAD_ARGS:          SpawnBadArgs,
	agentpb.SpawnKind_SPAWN_RESOURCE_LIMIT:    SpawnResourceLimit,
	agentpb.SpawnKind_SPAWN_USER_SETUP_FAILED: SpawnUserSetupFailed,
	agentpb.SpawnKind_SPAWN_PTY_SETUP_FAILED:  SpawnPtySetupFailed,
	agentpb.SpawnKind_SPAWN_OTHER:             SpawnOther,
}

// Proto returns the wire value of k.
func (k SpawnKind) Proto() agentpb.SpawnKind {
	for p, s := range spawnKinds {
		if s == k {
			return p
		}
	}
	return agentpb.SpawnKind_SPAWN_OTHER
}

// SpawnError reports a process that never started: the program is missing
// or not executable, the working directory or user is bad, a limit or the
// pty could not be set up. It matches ErrSpawn.
type SpawnError struct {
	Kind    SpawnKind
	Path    string // the program or directory concerned
	Errno   syscall.Errno
	Message string
}

func (e *SpawnError) Error() string {
	s := "guestagent: spawn: " + string(e.Kind)
	if e.Path != "" {
		s += ": " + e.Path
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is ErrSpawn.
func (e *SpawnError) Is(target error) bool { return target == ErrSpawn }

// Unwrap returns the errno, if any, so errors.Is(err, syscall.ENOENT) works.
func (e *SpawnError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

var codeErrs = map[agentpb.ErrorCode]error{
	agentpb.ErrorCode_ERROR_NOT_FOUND:   ErrNotFound,
	agentpb.ErrorCode_ERROR_EXISTS:      ErrExist,
	agentpb.ErrorCode_ERROR_NOT_DIR:     ErrNotDir,
	agentpb.ErrorCode_ERROR_IS_DIR:      ErrIsDir,
	agentpb.ErrorCode_ERROR_NOT_EMPTY:   ErrNotEmpty,
	agentpb.ErrorCode_ERROR_PERMISSION:  ErrPermission,
	agentpb.ErrorCode_ERROR_INVALID:     ErrInvalid,
	agentpb.ErrorCode_ERROR_UNAVAILABLE: ErrUnavailable,
	agentpb.ErrorCode_ERROR_IO:          ErrIO,
}

// maxMessage bounds the guest-supplied text kept in an error.
const maxMessage = 512

// sanitize makes peer text safe to print: valid UTF-8, no control
// characters, at most maxMessage bytes.
func sanitize(s string) string {
	if len(s) > maxMessage {
		s = s[:maxMessage]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// ErrorFromProto converts a guest Error frame into a *SpawnError (code
// ERROR_SPAWN) or a *RemoteError. Its input is guest-controlled: unknown
// codes map to ErrIO and text is sanitised.
func ErrorFromProto(op string, e *agentpb.Error) error {
	errno := syscall.Errno(0)
	if n := e.GetErrno(); n > 0 && n < 4096 {
		errno = syscall.Errno(n)
	}
	if e.GetCode() == agentpb.ErrorCode_ERROR_SPAWN {
		kind, ok := spawnKinds[e.GetSpawn()]
		if !ok {
			kind = SpawnOther
		}
		return &SpawnError{Kind: kind, Path: sanitize(e.GetPath()), Errno: errno, Message: sanitize(e.GetMessage())}
	}
	cls, ok := codeErrs[e.GetCode()]
	if !ok {
		cls = ErrIO
	}
	return &RemoteError{Op: op, Path: sanitize(e.GetPath()), Err: cls, Errno: errno, Message: sanitize(e.GetMessage())}
}

// ErrorToProto converts a local error into an Error frame: *SpawnError keeps
// its kind, errnos (from *fs.PathError, *os.LinkError, *os.SyscallError or a
// bare syscall.Errno) map to their class, the guestagent sentinels to theirs.
func ErrorToProto(err error) *agentpb.Error {
	var se *SpawnError
	if errors.As(err, &se) {
		return &agentpb.Error{Code: agentpb.ErrorCode_ERROR_SPAWN, Spawn: se.Kind.Proto(), Path: se.Path, Errno: int32(se.Errno), Message: se.Message}
	}
	e := &agentpb.Error{Code: agentpb.ErrorCode_ERROR_IO, Message: err.Error()}
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		e.Path, e.Message = pe.Path, pe.Op+": "+pe.Err.Error()
	case errors.As(err, &le):
		e.Path, e.Message = le.Old, le.Op+" "+le.Old+" "+le.New+": "+le.Err.Error()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		e.Errno = int32(errno)
		switch errno {
		case syscall.ENOENT:
			e.Code = agentpb.ErrorCode_ERROR_NOT_FOUND
		case syscall.EEXIST:
			e.Code = agentpb.ErrorCode_ERROR_EXISTS
		case syscall.ENOTDIR:
			e.Code = agentpb.ErrorCode_ERROR_NOT_DIR
		case syscall.EISDIR:
			e.Code = agentpb.ErrorCode_ERROR_IS_DIR
		case syscall.ENOTEMPTY:
			e.Code = agentpb.ErrorCode_ERROR_NOT_EMPTY
		case syscall.EACCES, syscall.EPERM, syscall.EROFS:
			e.Code = agentpb.ErrorCode_ERROR_PERMISSION
		case syscall.EINVAL, syscall.ENAMETOOLONG:
			e.Code = agentpb.ErrorCode_ERROR_INVALID
		}
		return e
	}
	for code, sentinel := range codeErrs {
		if errors.Is(err, sentinel) {
			e.Code = code
			break
		}
	}
	return e
}
