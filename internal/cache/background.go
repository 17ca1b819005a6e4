package cache

import (
	"context"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// BackgroundOptions say which of a serving cache's background loops run.
type BackgroundOptions struct {
	// SyncInterval: with a shared backend (Options.ReadThrough), how often the backend is
	// listed to pick up what other servers uploaded or deleted (RunSync); 0: never.
	SyncInterval time.Duration
	// StaleUploadAge: a backend that keeps the debris of interrupted uploads (a
	// backend.Sweeper: S3's incomplete multipart uploads, which are billed) has what is older
	// than this removed, hourly.
	StaleUploadAge time.Duration
}

const (
	// accessFlushEvery is how often recorded access times are written to the index.
	accessFlushEvery = 10 * time.Second
	// sweepEvery is how often a backend.Sweeper runs.
	sweepEvery = time.Hour
)

// StartBackground starts the loops a serving cache runs beside its requests: the access-time
// flusher, the sync of a shared backend, and the sweeper of a backend that has one. stop ends
// them and waits until they have: the flusher writes the access times it holds first. Call stop
// before the index closes.
func (c *Cache) StartBackground(opts BackgroundOptions) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.RunAccessFlusher(ctx, accessFlushEvery) })
	if c.opts.ReadThrough && opts.SyncInterval > 0 {
		wg.Go(func() { c.RunSync(ctx, opts.SyncInterval) })
	}
	if sw, ok := backend.As[backend.Sweeper](c.backend); ok {
		wg.Go(func() { sw.RunSweeper(ctx, sweepEvery, opts.StaleUploadAge) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}
