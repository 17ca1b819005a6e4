package cache

import (
	"errors"
	"fmt"
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
