package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// Defaults for FollowerConfig.
const (
	// DefaultLookback is how far behind the last poll a follower lists again. A writer names
	// an object when it starts writing it, and the object may show up in a listing later (a
	// slow or retried PUT, clocks a little apart): one that shows up later than this is missed
	// by the journal and found by the periodic full listing instead.
	DefaultLookback = 30 * time.Second
)

// FollowerConfig says how to follow a journal.
type FollowerConfig struct {
	// Self is this replica's writer id: its own objects are skipped.
	Self string
	// Every is the poll interval.
	Every time.Duration
	// StaleAfter is how long after the start of the last successful poll the follower is no
	// longer Current. 0: three times Every.
	StaleAfter time.Duration
	// Lookback: DefaultLookback when 0.
	Lookback time.Duration
	// Apply applies the records of one object, in order. late says that an object written
	// after this one was applied already (the writers' objects arrived out of order), so that
	// a Put in it may be older than what the bucket holds now. An error stops the poll; the
	// object is read again at the next one.
	Apply func(ctx context.Context, recs []Record, written time.Time, late bool) error
	Log   *slog.Logger
}

// Follower reads the other replicas' journal objects and applies their records.
type Follower struct {
	b   backend.Backend
	cfg FollowerConfig

	synced   atomic.Bool
	okAt     atomic.Int64 // UnixNano of the start of the last successful poll
	requests atomic.Int64 // bucket requests made by polls (LIST pages and object reads)

	mu     sync.Mutex // one poll at a time
	from   time.Time  // start of the last successful poll, or of the full sync before it
	seen   map[string]time.Time
	newest time.Time // newest object applied
}

// NewFollower returns a follower of the journal in b.
func NewFollower(b backend.Backend, cfg FollowerConfig) (*Follower, error) {
	if cfg.Every <= 0 {
		return nil, fmt.Errorf("journal poll interval %s: want more than 0", cfg.Every)
	}
	if cfg.Apply == nil {
		return nil, errors.New("journal follower without Apply")
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = 3 * cfg.Every
	}
	if cfg.Lookback == 0 {
		cfg.Lookback = DefaultLookback
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Follower{b: b, cfg: cfg, seen: make(map[string]time.Time)}, nil
}

// Current reports whether every record written more than one poll interval ago (give or take a
// write and a listing) has been applied: a full sync has completed since the follower started
// and a poll succeeded within StaleAfter. While it is false, the index may lack what other
// replicas committed, and a miss must ask the bucket.
func (f *Follower) Current() bool {
	return f.synced.Load() && time.Since(time.Unix(0, f.okAt.Load())) < f.cfg.StaleAfter
}

// StaleAfter is the bound Current keeps.
func (f *Follower) StaleAfter() time.Duration { return f.cfg.StaleAfter }

// Requests is how many bucket requests polls made so far.
func (f *Follower) Requests() int64 { return f.requests.Load() }

// Run brings the index in line with the bucket with sync (a full listing), retrying every poll
// interval until it succeeds, then polls the journal every interval until ctx ends. Records
// written since sync began are applied by the first poll.
func (f *Follower) Run(ctx context.Context, sync func(context.Context) error) {
	for {
		start := time.Now()
		err := sync(ctx)
		if err == nil {
			f.mu.Lock()
			f.from = start
			f.mu.Unlock()
			f.synced.Store(true)
			break
		}
		if ctx.Err() != nil {
			return
		}
		f.cfg.Log.Warn("journal: full sync before following failed; misses ask the bucket meanwhile", "err", err)
		sleep(ctx, f.cfg.Every)
	}
	failing := false
	for {
		err := f.Poll(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			f.cfg.Log.Warn("journal: poll failed; after the stale bound, misses ask the bucket", "staleAfter", f.cfg.StaleAfter, "err", err)
		case err == nil && failing:
			failing = false
			f.cfg.Log.Info("journal: following again")
		}
		sleep(ctx, f.cfg.Every)
	}
}

// Poll lists the journal objects written since the last successful poll (less the lookback),
// and applies those of other writers not applied yet, in name order.
func (f *Follower) Poll(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := time.Now()
	from := f.from
	if from.IsZero() || from.After(start) {
		from = start
	}
	from = from.Add(-f.cfg.Lookback)
	type obj struct {
		name    string
		written time.Time
	}
	var todo []obj
	f.requests.Add(1)
	n := 0
	err := listAfterFrom(ctx, f.b, Prefix, position(from), func(fi backend.FileInfo) error {
		if n++; n%1000 == 0 {
			f.requests.Add(1) // another page
		}
		if _, ok := f.seen[fi.Name]; ok {
			return nil
		}
		t, writer, err := ParseObjectName(fi.Name)
		if err != nil {
			f.cfg.Log.Warn("journal: skipping an object that is not a journal object", "object", fi.Name, "err", err)
			f.seen[fi.Name] = start
			return nil
		}
		if writer == f.cfg.Self {
			f.seen[fi.Name] = t
			return nil
		}
		todo = append(todo, obj{fi.Name, t})
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: list: %w", err)
	}
	slices.SortFunc(todo, func(a, b obj) int { return a.written.Compare(b.written) })
	for _, o := range todo {
		recs, err := f.read(ctx, o.name)
		if errors.Is(err, backend.ErrNotExist) {
			f.seen[o.name] = o.written // expired meanwhile
			continue
		}
		if err != nil {
			return err
		}
		if recs != nil {
			if err := f.cfg.Apply(ctx, recs, o.written, o.written.Before(f.newest)); err != nil {
				return fmt.Errorf("journal: apply %s: %w", o.name, err)
			}
		}
		f.seen[o.name] = o.written
		if o.written.After(f.newest) {
			f.newest = o.written
		}
	}
	for name, t := range f.seen {
		if t.Before(from) {
			delete(f.seen, name)
		}
	}
	f.from = start
	f.okAt.Store(start.UnixNano())
	return nil
}

// read reads and parses one object. A malformed one is logged and yields no records (nil, nil):
// cached never writes one, so another program did, and the periodic full listing covers whatever
// it meant.
func (f *Follower) read(ctx context.Context, name string) ([]Record, error) {
	f.requests.Add(1)
	obj, err := f.b.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	if size := obj.Info().Size; size > MaxObjectSize {
		f.cfg.Log.Warn("journal: skipping an object larger than a journal object can be", "object", name, "size", size, "max", MaxObjectSize)
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(obj, MaxObjectSize+1))
	if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", name, err)
	}
	if len(data) > MaxObjectSize {
		f.cfg.Log.Warn("journal: skipping an object larger than a journal object can be", "object", name, "max", MaxObjectSize)
		return nil, nil
	}
	recs, err := Parse(data)
	if err != nil {
		f.cfg.Log.Warn("journal: skipping a malformed object", "object", name, "err", err)
		return nil, nil
	}
	return recs, nil
}

// ListerFrom is implemented by backends that list names in order from a position (S3's
// StartAfter), so that following the journal costs one request however long it is.
type ListerFrom interface {
	// ListFrom calls fn for every object whose name starts with prefix and sorts after
	// after, in name order.
	ListFrom(ctx context.Context, prefix, after string, fn func(backend.FileInfo) error) error
}

// listAfterFrom lists names under prefix that sort after after, in order: with the backend's
// ListerFrom, or by listing all of prefix and sorting.
func listAfterFrom(ctx context.Context, b backend.Backend, prefix, after string, fn func(backend.FileInfo) error) error {
	if l, ok := backend.As[ListerFrom](b); ok {
		return l.ListFrom(ctx, prefix, after, fn)
	}
	var all []backend.FileInfo
	if err := b.List(ctx, prefix, func(fi backend.FileInfo) error {
		if fi.Name > after {
			all = append(all, fi)
		}
		return nil
	}); err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b backend.FileInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	for _, fi := range all {
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// listAfter lists every name under prefix in order.
func listAfter(ctx context.Context, b backend.Backend, prefix string, fn func(backend.FileInfo) error) error {
	return listAfterFrom(ctx, b, prefix, "", fn)
}
