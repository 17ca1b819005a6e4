package cache

import (
	"errors"
	"fmt"
	"io"
)

// ErrNotFound means the cache does not hold what was asked for.
var ErrNotFound = errors.New("not found")

// ErrReferenced means a store path is still referenced by another one and must stay.
var ErrReferenced = errors.New("still referenced")

// InputError is a refusal caused by what the client sent: the HTTP layer answers it with 400 and
// the message, which names the offending field and value.
type InputError struct {
	Field string // narinfo field or part of the request, e.g. "NarHash", "URL", "body"
	Err   error
}

func (e *InputError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(field, format string, a ...any) error {
	return &InputError{Field: field, Err: fmt.Errorf(format, a...)}
}

// NotIndexedError is an upload whose object was saved in the backend but whose index update
// then failed: the object is there, but the cache does not serve it (or serves it without its
// bookkeeping) until the upload is retried or the index rebuilt. "Nothing was stored" would be
// untrue.
type NotIndexedError struct {
	Name string // the saved object, e.g. "<hash>.narinfo"
	Err  error
}

func (e *NotIndexedError) Error() string {
	return e.Name + " was saved but indexing it failed: " + e.Err.Error()
}
func (e *NotIndexedError) Unwrap() error { return e.Err }

// NarTooLargeError refuses an upload whose NAR, decompressed, is larger than Options.MaxNarSize:
// a small compressed file may expand to gigabytes (a decompression bomb).
type NarTooLargeError struct {
	Limit int64 // bytes
}

func (e *NarTooLargeError) Error() string {
	return fmt.Sprintf("the decompressed NAR is larger than the limit of %d bytes", e.Limit)
}

// narLimit reads a decompressed NAR and fails with a *NarTooLargeError past limit bytes.
type narLimit struct {
	r     io.Reader
	left  int64 // bytes still allowed
	limit int64
}

func (l *narLimit) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, &NarTooLargeError{Limit: l.limit}
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if l.left -= int64(n); l.left < 0 {
		return n + int(l.left), &NarTooLargeError{Limit: l.limit}
	}
	return n, err
}
