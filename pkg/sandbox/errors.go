// SPDX-License-Identifier: Apache-2.0

package sandbox

import "errors"

// Error classes. Every error this package returns for a condition a caller
// branches on wraps one of them; the root package maps them to its kinds.
var (
	// ErrInvalidConfig: the configuration or an argument is invalid.
	ErrInvalidConfig = errors.New("sandbox: invalid config")
	// ErrNotFound: no sandbox of that name.
	ErrNotFound = errors.New("sandbox: not found")
	// ErrAlreadyExists: a sandbox of that name exists.
	ErrAlreadyExists = errors.New("sandbox: already exists")
	// ErrNotRunning: the sandbox is not running (stopped or crashed).
	ErrNotRunning = errors.New("sandbox: not running")
	// ErrImage: the image could not be pulled or prepared.
	ErrImage = errors.New("sandbox: image")
	// ErrBoot: the sandbox did not come up (its process ended or the agent
	// did not answer in time).
	ErrBoot = errors.New("sandbox: boot failed")
	// ErrClosed: the handle was stopped or closed.
	ErrClosed = errors.New("sandbox: handle closed")
)

// ErrStillRunning: the operation needs a stopped sandbox.
var ErrStillRunning = errors.New("sandbox: still running")

// ErrSpawn: the command did not start in the guest (missing program, bad
// directory or user).
var ErrSpawn = errors.New("sandbox: exec did not start")

// ErrMetricsUnavailable: the sandbox runs but its sandbox process has not
// written its first stats yet (right after boot); retry.
var ErrMetricsUnavailable = errors.New("sandbox: no live metrics slot yet")

// ErrPatchFailed: a root filesystem patch could not be applied in the
// guest; the error names the patch.
var ErrPatchFailed = errors.New("sandbox: patch failed")
