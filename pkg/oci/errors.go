// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"errors"
	"net/http"
	"os"

	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/docker"
	ocilayout "go.podman.io/image/v5/oci/layout"
)

// Sentinel errors. Callers branch on them with errors.Is; the wrapped error
// text adds the reference and the cause. containers/image error types never
// leave this package: they are classified here and kept only as text.
var (
	// ErrNotFound: the image, tag, blob or layout does not exist, or it is
	// not in the store and the pull policy is PullNever.
	ErrNotFound = errors.New("oci: not found")
	// ErrUnauthorized: the registry refused the credentials (or their
	// absence) with 401 or 403.
	ErrUnauthorized = errors.New("oci: unauthorized")
	// ErrInvalidReference: the image reference does not parse.
	ErrInvalidReference = errors.New("oci: invalid reference")
	// ErrInUse: Remove was refused because a holder marks the image in use.
	ErrInUse = errors.New("oci: image in use")
	// ErrInvalidImage: the registry or layout served bytes that fail
	// verification (digest or size mismatch, bad manifest or config,
	// unsupported media type, no matching platform).
	ErrInvalidImage = errors.New("oci: invalid image")
)

// classError wraps err so that errors.Is(err, class) holds, while keeping
// the original text. It never wraps the foreign error type itself, so no
// containers/image type can be reached through errors.As.
type classError struct {
	class error
	msg   string
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

// classify maps an error from containers/image to one of this package's
// classes. Errors it does not recognise become plain errors carrying the
// text only.
func classify(err error) error {
	if err == nil {
		return nil
	}
	class := errUnavailable
	var unauth docker.ErrUnauthorizedForCredentials
	var status docker.UnexpectedHTTPStatusError
	var coder errcode.ErrorCoder
	var notFound ocilayout.ImageNotFoundError
	switch {
	case errors.As(err, &unauth):
		class = ErrUnauthorized
	case errors.As(err, &status):
		class = classOfStatus(status.StatusCode)
	case errors.As(err, &coder):
		class = classOfStatus(coder.ErrorCode().Descriptor().HTTPStatusCode)
	case errors.As(err, &notFound), errors.Is(err, os.ErrNotExist):
		class = ErrNotFound
	}
	return &classError{class: class, msg: "oci: " + err.Error()}
}

// errUnavailable is the class of registry errors that are neither of the
// exported ones (network failures, 5xx, TLS); it is not exported because
// callers have nothing to branch on but "failed".
var errUnavailable = errors.New("oci: registry unavailable")

func classOfStatus(code int) error {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrUnauthorized
	case http.StatusNotFound:
		return ErrNotFound
	}
	return errUnavailable
}
