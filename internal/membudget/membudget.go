// Package membudget bounds the memory that decoders of concurrent uploads take together. Each
// upload's decoder reserves, before it allocates, what its stream declares it needs (an xz
// dictionary, a zstd or brotli window), grows its reservation if a later part of the stream
// declares more, and gives it all back when the upload ends. When the budget is spent, a
// reservation waits a while for room and then fails with a *BusyError (the server answers 503
// with Retry-After); one that could never fit fails at once with a *TooLargeError (413).
//
// It accounts for memory; it never allocates any, and a nil *Budget grants everything.
package membudget

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Budget is the memory all decoders may take at once.
type Budget struct {
	size     int64
	wait     time.Duration
	sem      *semaphore.Weighted
	reserved atomic.Int64
}

// New returns a budget of size bytes whose reservations wait up to wait for room.
func New(size int64, wait time.Duration) *Budget {
	return &Budget{size: size, wait: wait, sem: semaphore.NewWeighted(size)}
}

// Size is the budget, in bytes.
func (b *Budget) Size() int64 { return b.size }

// Reserved is what the reservations hold now, in bytes.
func (b *Budget) Reserved() int64 {
	if b == nil {
		return 0
	}
	return b.reserved.Load()
}

// TooLargeError is a need larger than the whole budget: it can never be granted.
type TooLargeError struct {
	Need, Size int64 // bytes
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("decoding needs %d MiB of memory, more than the whole decoder memory budget of %d MiB", e.Need>>20, e.Size>>20)
}

// BusyError is a need that did not fit in what other decoders left of the budget within the
// wait.
type BusyError struct {
	Need, Size int64 // bytes
	Waited     time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("decoding needs %d MiB of memory and other uploads' decoders held the %d MiB budget for %s", e.Need>>20, e.Size>>20, e.Waited)
}

// Reservation is what one decoder holds. It is safe for use by one goroutine at a time, and
// Release may be called from another once the decoder is done.
type Reservation struct {
	b    *Budget
	mu   sync.Mutex
	held int64
}

// Reserve starts a reservation holding nothing.
func (b *Budget) Reserve() *Reservation { return &Reservation{b: b} }

// Need makes the reservation hold at least n bytes, waiting up to the budget's wait (or until
// ctx ends) for the difference.
func (r *Reservation) Need(ctx context.Context, n int64) error {
	if r == nil || r.b == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	more := n - r.held
	if more <= 0 {
		return nil
	}
	if n > r.b.size {
		return &TooLargeError{Need: n, Size: r.b.size}
	}
	if !r.b.sem.TryAcquire(more) {
		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, r.b.wait)
		err := r.b.sem.Acquire(wctx, more)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &BusyError{Need: n, Size: r.b.size, Waited: time.Since(start).Round(time.Second)}
		}
	}
	r.held = n
	r.b.reserved.Add(more)
	return nil
}

// Release gives back everything the reservation holds. It may be called more than once.
func (r *Reservation) Release() {
	if r == nil || r.b == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held > 0 {
		r.b.reserved.Add(-r.held)
		r.b.sem.Release(r.held)
		r.held = 0
	}
}

// IsBusy reports whether err is (or wraps) a *BusyError.
func IsBusy(err error) bool {
	var b *BusyError
	return errors.As(err, &b)
}
