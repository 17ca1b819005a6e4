package cache

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/index"
)

// StoreStats are the cache's size, as shown on the landing page and exported as metrics.
type StoreStats struct {
	StorePaths int64     // narinfos served
	NarBytes   uint64    // bytes the stored NAR files take (sum of their FileSize)
	CountedAt  time.Time // when the count started; zero until a first count has finished
}

// StatsCounter answers StoreStats without scanning the index on every call. The index keeps no
// running totals (and garbage collection removes paths), so the counts are recounted from the
// index in the background, at most once per maxAge, and only when someone asks for counts older
// than that: an idle server never scans.
type StatsCounter struct {
	ix     *index.Index
	log    *slog.Logger
	maxAge time.Duration

	mu      sync.Mutex
	cur     StoreStats
	started time.Time     // start of the last count; zero before the first
	running bool          // a count is in progress
	first   chan struct{} // closed when the first count has ended, successfully or not
}

// recountTimeout bounds one recount, so that a stuck index cannot pin a goroutine forever.
const recountTimeout = 10 * time.Minute

// NewStatsCounter returns a counter whose answers are at most maxAge old (plus the time a recount
// takes). It counts nothing until asked.
func (c *Cache) NewStatsCounter(maxAge time.Duration) *StatsCounter {
	return &StatsCounter{ix: c.index, log: c.log, maxAge: maxAge, first: make(chan struct{})}
}

// Stats returns the latest counts and starts a recount in the background when they are older than
// maxAge. Until the very first count has finished it waits for it, as long as ctx allows, and
// returns the zero StoreStats (CountedAt zero) if ctx ends first.
func (sc *StatsCounter) Stats(ctx context.Context) StoreStats {
	sc.mu.Lock()
	if !sc.running && (sc.started.IsZero() || time.Since(sc.started) >= sc.maxAge) {
		sc.running, sc.started = true, time.Now()
		go sc.recount(sc.started)
	}
	cur := sc.cur
	sc.mu.Unlock()
	if !cur.CountedAt.IsZero() {
		return cur
	}
	select {
	case <-sc.first:
	case <-ctx.Done():
		return StoreStats{}
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.cur
}

func (sc *StatsCounter) recount(started time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), recountTimeout)
	defer cancel()
	counts, err := sc.ix.Count(ctx)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if err != nil {
		// Keep the previous counts; the next ask after maxAge tries again.
		sc.log.Warn("counting store paths", "err", err)
	} else {
		sc.cur = StoreStats{StorePaths: counts.NarInfos, NarBytes: counts.FileBytes, CountedAt: started}
	}
	sc.running = false
	select {
	case <-sc.first:
	default:
		close(sc.first)
	}
}
