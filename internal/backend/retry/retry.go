// Package retry wraps a backend so that transient failures (throttling, a server error, a
// dropped connection) are tried again with exponential backoff and jitter, within a bound on
// attempts and time, and never beyond the caller's ctx.
//
// It knows nothing of any storage service: which errors are transient is decided by a function
// it is given (for S3, s3.IsTransient). It never retries a missing object, an error of the
// caller (a failing Save reader, an error from List's fn), or what it cannot repeat: a Save
// whose reader was partly consumed and cannot be rewound, or a List that already called fn.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// Config is the retry policy. Zero fields take the defaults.
type Config struct {
	// IsTransient reports whether a failure may go away on its own. Nil: the wrapped backend's
	// own IsTransient method (see Classifier).
	IsTransient func(error) bool

	MaxAttempts int           // attempts per operation, the first included; default 8
	MaxElapsed  time.Duration // no retry is started after this long; default 1 minute
	BaseDelay   time.Duration // delay before the first retry, doubling after; default 100 ms
	MaxDelay    time.Duration // cap on one delay; default 10 s

	Log *slog.Logger // one line per retry
}

// Classifier is a backend that knows which of its errors are transient.
type Classifier interface {
	IsTransient(error) bool
}

// Backend retries the operations of the backend it wraps.
type Backend struct {
	b   backend.Backend
	cfg Config
}

var _ backend.Backend = (*Backend)(nil)

// New wraps b. It panics if cfg has no IsTransient and b is no Classifier: a retry wrapper
// that cannot tell transient failures apart is a programming error.
func New(b backend.Backend, cfg Config) *Backend {
	if cfg.IsTransient == nil {
		c, ok := b.(Classifier)
		if !ok {
			panic("retry.New: no IsTransient function and the backend is no Classifier")
		}
		cfg.IsTransient = c.IsTransient
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.MaxElapsed <= 0 {
		cfg.MaxElapsed = time.Minute
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = 100 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 10 * time.Second
	}
	if cfg.MaxDelay < cfg.BaseDelay {
		cfg.MaxDelay = cfg.BaseDelay
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Backend{b: b, cfg: cfg}
}

// Unwrap is the wrapped backend, for what only it offers (the S3 sweeper, say).
func (r *Backend) Unwrap() backend.Backend { return r.b }

// transient reports whether err is worth another attempt.
func (r *Backend) transient(err error) bool {
	return err != nil && !errors.Is(err, backend.ErrNotExist) && r.cfg.IsTransient(err)
}

// do runs f until it succeeds, fails for good, or the policy or ctx says stop. canRetry, if not
// nil, is asked before each retry whether the operation can be repeated at all. A final error
// that is not transient is returned as it is; one that still was says how often it was tried.
func (r *Backend) do(ctx context.Context, op, name string, canRetry func() bool, f func() error) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := f()
		if !r.transient(err) {
			return err
		}
		if ctx.Err() != nil || (canRetry != nil && !canRetry()) {
			return err
		}
		if attempt >= r.cfg.MaxAttempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		delay := r.backoff(attempt)
		if time.Since(start)+delay > r.cfg.MaxElapsed {
			return fmt.Errorf("%w (gave up after %d attempts in %v)", err, attempt, time.Since(start).Round(time.Millisecond))
		}
		r.cfg.Log.Warn("backend retry", "op", op, "name", name, "attempt", attempt, "delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (retry stopped: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// backoff is the delay before retry number attempt: exponential, capped, with "equal jitter"
// (half fixed, half random) so that many clients throttled at once do not come back in step.
func (r *Backend) backoff(attempt int) time.Duration {
	d := r.cfg.MaxDelay
	if attempt < 32 {
		d = min(r.cfg.BaseDelay<<(attempt-1), r.cfg.MaxDelay)
	}
	half := d / 2
	return half + rand.N(half+1)
}

// Save retries only what it can repeat: a reader that failed is the caller's verdict (or a
// client gone), never retried; a reader that was partly consumed is retried only if it can be
// rewound (an io.Seeker, such as the bytes.Reader of a narinfo or an opened object).
func (r *Backend) Save(ctx context.Context, name string, rd io.Reader) error {
	tr := &trackingReader{r: rd}
	seeker, _ := rd.(io.Seeker)
	var origin int64
	if seeker != nil {
		var err error
		if origin, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil
		}
	}
	canRetry := func() bool {
		switch {
		case tr.err != nil:
			return false
		case tr.n == 0:
			return true
		case seeker == nil:
			return false
		}
		if _, err := seeker.Seek(origin, io.SeekStart); err != nil {
			return false
		}
		tr.n = 0
		return true
	}
	return r.do(ctx, "save", name, canRetry, func() error { return r.b.Save(ctx, name, tr) })
}

// trackingReader remembers whether the caller's reader was read from or failed.
type trackingReader struct {
	r   io.Reader
	n   int64
	err error // a failure of r itself, not io.EOF
}

func (t *trackingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.n += int64(n)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

func (r *Backend) Stat(ctx context.Context, name string) (fi backend.FileInfo, err error) {
	err = r.do(ctx, "stat", name, nil, func() error {
		fi, err = r.b.Stat(ctx, name)
		return err
	})
	return fi, err
}

// Remove treats a missing object on a retry as removed: the attempt that failed may have
// deleted it before its answer was lost.
func (r *Backend) Remove(ctx context.Context, name string) error {
	failed := false
	return r.do(ctx, "remove", name, nil, func() error {
		err := r.b.Remove(ctx, name)
		if failed && errors.Is(err, backend.ErrNotExist) {
			return nil
		}
		failed = err != nil
		return err
	})
}

// List is retried only until fn was first called: the contract promises no order, so a
// repeated listing cannot resume, and fn must not see an object twice.
func (r *Backend) List(ctx context.Context, prefix string, fn func(backend.FileInfo) error) error {
	called := false
	return r.do(ctx, "list", prefix, func() bool { return !called }, func() error {
		return r.b.List(ctx, prefix, func(fi backend.FileInfo) error {
			called = true
			return fn(fi)
		})
	})
}

// Open retries opening, and the returned object retries its reads: after a transient failure
// it seeks back to where the read was and reads again.
func (r *Backend) Open(ctx context.Context, name string) (backend.Object, error) {
	var obj backend.Object
	err := r.do(ctx, "open", name, nil, func() error {
		var err error
		obj, err = r.b.Open(ctx, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	// A local file does not fail transiently, and wrapping it would hide the *os.File the HTTP
	// layer hands to the kernel (sendfile).
	if _, ok := obj.(backend.LocalFile); ok {
		return obj, nil
	}
	return &object{Object: obj, r: r, ctx: ctx}, nil
}

type object struct {
	backend.Object
	r     *Backend
	ctx   context.Context
	pos   int64 // where the caller's next Read continues
	dirty bool  // a read failed: the inner position is not to be trusted
}

func (o *object) Read(p []byte) (int, error) {
	var n int
	err := o.r.do(o.ctx, "read", o.Info().Name, nil, func() error {
		if o.dirty {
			if _, err := o.Object.Seek(o.pos, io.SeekStart); err != nil {
				return err
			}
			o.dirty = false
		}
		var err error
		n, err = o.Object.Read(p)
		o.pos += int64(n)
		if err != nil && err != io.EOF {
			o.dirty = true
			if n > 0 && o.r.transient(err) {
				err = nil // deliver what arrived; the next Read retries
			}
		}
		return err
	})
	return n, err
}

func (o *object) Seek(offset int64, whence int) (int64, error) {
	pos, err := o.Object.Seek(offset, whence)
	if err == nil {
		o.pos = pos
	}
	return pos, err
}

var _ backend.Mover = (*Backend)(nil)

// Move renames through the wrapped backend's Mover, retried; without one it copies (Open, Save,
// Remove), each step retried. A retry that finds from gone and to present after a failed
// attempt counts as done: the failed attempt moved it before its answer was lost.
func (r *Backend) Move(ctx context.Context, from, to string) error {
	m, ok := r.b.(backend.Mover)
	if !ok {
		return backend.MoveByCopy(ctx, r, from, to) // each step retried
	}
	failed := false
	return r.do(ctx, "move", from, nil, func() error {
		err := m.Move(ctx, from, to)
		if failed && errors.Is(err, backend.ErrNotExist) {
			if _, serr := r.b.Stat(ctx, to); serr == nil {
				return nil
			}
		}
		failed = err != nil
		return err
	})
}

func (r *Backend) Close() error { return r.b.Close() }
