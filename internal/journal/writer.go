package journal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// maxPending bounds the records a writer holds while the bucket refuses its writes; past it the
// oldest are dropped (the followers' periodic full listing still finds those paths).
const maxPending = 100000

// NewWriterID returns a random id for a writer: a replica gets a new one at every start.
func NewWriterID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Writer publishes this replica's records. Add never waits for the bucket: Run writes what was
// added in batches, one object per batch, at most one object per gap, so that a burst of commits
// costs a few requests.
type Writer struct {
	b   backend.Backend
	id  string
	log *slog.Logger

	mu      sync.Mutex
	pending []Record
	first   int64 // sequence number of pending[0]
	dropped int
	last    int64 // UnixNano of the last object's name: names strictly increase
	wake    chan struct{}

	flushMu sync.Mutex // one flush at a time
}

// NewWriter returns a writer that writes objects named after id (NewWriterID) to b.
func NewWriter(b backend.Backend, id string, log *slog.Logger) (*Writer, error) {
	if !validWriter(id) {
		return nil, fmt.Errorf("journal writer id %q: want 1-64 characters of [0-9a-z]", id)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{b: b, id: id, log: log, wake: make(chan struct{}, 1)}, nil
}

// ID is the writer's id, which a follower on the same replica skips.
func (w *Writer) ID() string { return w.id }

// Add queues a record for the next object.
func (w *Writer) Add(r Record) {
	w.mu.Lock()
	w.pending = append(w.pending, r)
	if len(w.pending) > maxPending {
		n := len(w.pending) - maxPending
		w.dropped += n
		w.first += int64(n)
		w.pending = append(w.pending[:0:0], w.pending[n:]...)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Pending is how many records wait to be written.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Run writes queued records until ctx ends, at most one object per gap; a failed write is
// retried (the records keep their order) after a pause that grows to 30s. When ctx ends, what is
// still queued gets one last try of a few seconds.
func (w *Writer) Run(ctx context.Context, gap time.Duration) {
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := w.Flush(fctx); err != nil {
				w.log.Warn("journal: records not written at shutdown; other replicas see these paths at their next full sync", "records", w.Pending(), "err", err)
			}
			cancel()
			return
		case <-w.wake:
		}
		if err := w.Flush(ctx); err != nil {
			if ctx.Err() != nil {
				continue
			}
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			w.log.Warn("journal: write failed; retrying", "records", w.Pending(), "retryIn", backoff, "err", err)
			w.signal()
			sleep(ctx, backoff)
			continue
		}
		backoff = 0
		sleep(ctx, gap)
	}
}

func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Flush writes every queued record now, in objects of at most MaxObjectSize.
func (w *Writer) Flush(ctx context.Context) error {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	for {
		w.mu.Lock()
		if w.dropped > 0 {
			w.log.Warn("journal: dropped records the bucket would not take; other replicas see these paths at their next full sync", "records", w.dropped)
			w.dropped = 0
		}
		n, size := 0, len(header)
		for n < len(w.pending) && (n == 0 || size+w.pending[n].size() <= MaxObjectSize) {
			size += w.pending[n].size()
			n++
		}
		batch, end := w.pending[:n:n], w.first+int64(n)
		now := time.Now().UnixNano()
		if now <= w.last {
			now = w.last + 1
		}
		w.mu.Unlock()
		if n == 0 {
			return nil
		}
		name := ObjectName(time.Unix(0, now), w.id)
		if err := w.b.Save(ctx, name, bytes.NewReader(Format(batch))); err != nil {
			return fmt.Errorf("journal: write %s: %w", name, err)
		}
		w.mu.Lock()
		w.last = now
		// Add may have dropped some of the batch from the front meanwhile.
		if done := int(end - w.first); done > 0 {
			w.pending = append(w.pending[:0:0], w.pending[done:]...)
			w.first = end
		}
		w.mu.Unlock()
	}
}

// errStop ends a listing early.
var errStop = errors.New("stop listing")

// Expire removes journal objects written more than olderThan ago, by any writer, and returns how
// many it removed. Followers only read the last minute or so of the journal.
func Expire(ctx context.Context, b backend.Backend, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	var old []string
	err := listAfter(ctx, b, Prefix, func(fi backend.FileInfo) error {
		t, _, err := ParseObjectName(fi.Name)
		if err != nil {
			return nil // not ours to remove
		}
		if !t.Before(cutoff) {
			return errStop // names sort by time
		}
		old = append(old, fi.Name)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, fmt.Errorf("journal: list for expiry: %w", err)
	}
	n := 0
	for _, name := range old {
		if err := b.Remove(ctx, name); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return n, fmt.Errorf("journal: expire %s: %w", name, err)
		}
		n++
	}
	return n, nil
}

// RunExpiry calls Expire every interval until ctx ends, logging what it did.
func RunExpiry(ctx context.Context, b backend.Backend, every, olderThan time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := Expire(ctx, b, olderThan)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("journal: expiring old objects failed", "removed", n, "err", err)
		case n > 0:
			log.Debug("journal: expired old objects", "removed", n, "olderThan", olderThan)
		}
	}
}
