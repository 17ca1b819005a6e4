package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/cached-dev/cached/internal/backend"
)

// errChanged: the object was replaced while it was being read, so its bytes would mix two
// versions.
var errChanged = errors.New("object changed while being read")

// inputError marks a failure of the caller's reader during Save. It is never transient: the
// reader cannot be rewound, and a reader that refused the content will refuse it again.
type inputError struct{ err error }

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// transientCodes are S3 error codes worth another attempt besides the SDK's own list.
var transientCodes = map[string]bool{
	"SlowDown":           true,
	"ServiceUnavailable": true,
	"InternalError":      true,
	"RequestTimeout":     true,
	"TooManyRequests":    true,
	"Throttling":         true,
	"RequestThrottled":   true,
}

var sdkRetryables = retry.IsErrorRetryables(retry.DefaultRetryables)

// IsTransient reports whether err is a failure that may go away on its own: throttling (503
// SlowDown, 429), a server error (500, 502, 503, 504), or a network failure (connection
// refused or reset, timeout, a body cut short). A missing object, a cancelled context, a
// refused request and a failing reader given to Save are not.
func IsTransient(err error) bool {
	var ie *inputError
	switch {
	case err == nil,
		errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, backend.ErrNotExist),
		errors.Is(err, errChanged),
		errors.As(err, &ie):
		return false
	}
	switch httpStatus(err) {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && transientCodes[ae.ErrorCode()] {
		return true
	}
	if sdkRetryables.IsErrorRetryable(err) == aws.TrueTernary {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// IsTransient is the package's IsTransient, as a method so that a retry wrapper finds it.
func (b *Backend) IsTransient(err error) bool { return IsTransient(err) }

// httpStatus is the HTTP status of the response err came with, or 0.
func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		case "NoSuchBucket":
			return false
		}
	}
	return httpStatus(err) == http.StatusNotFound
}

// mapErr names the operation and object, and turns S3's flavours of "no such key" into
// backend.ErrNotExist.
func mapErr(op, name string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s %s: %w", op, name, backend.ErrNotExist)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

func isNoSuchUpload(err error) bool {
	var nsu *types.NoSuchUpload
	var ae smithy.APIError
	return errors.As(err, &nsu) || (errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload")
}
