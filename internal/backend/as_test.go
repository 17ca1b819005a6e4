package backend_test

import (
	"testing"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/backend/retry"
	"github.com/cached-dev/cached/internal/backend/s3"
)

// The capabilities each backend declares.
var (
	_ backend.Sweeper = (*s3.Backend)(nil)
	_ backend.Mover   = (*s3.Backend)(nil)
	_ backend.Mover   = (*disk.Backend)(nil)
	_ backend.Mover   = (*retry.Backend)(nil)
	_ backend.Wrapper = (*retry.Backend)(nil)
)

// TestAsSeesThroughWrappers: As finds a capability on the retrying wrapper itself first (its
// Mover retries), else on what it wraps, and reports one that no backend in the chain has.
func TestAsSeesThroughWrappers(t *testing.T) {
	d, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := retry.New(d, retry.Config{IsTransient: func(error) bool { return false }})
	if m, ok := backend.As[backend.Mover](r); !ok || m != backend.Mover(r) {
		t.Errorf("As[Mover](retry(disk)) = %T, %v; want the retrying wrapper", m, ok)
	}
	if got, ok := backend.As[*disk.Backend](r); !ok || got != d {
		t.Errorf("As[*disk.Backend](retry(disk)) = %v, %v; want the disk backend", got, ok)
	}
	if _, ok := backend.As[backend.Sweeper](r); ok {
		t.Error("As[Sweeper](retry(disk)) found one; the disk backend has no sweeper")
	}
	if _, ok := backend.As[backend.Sweeper](d); ok {
		t.Error("As[Sweeper](disk) found one")
	}
}
