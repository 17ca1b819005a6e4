package cache

import (
	"context"
	"sync"
	"time"
)

// accessTracker batches last-access times in memory; a flusher writes them to the index, so a
// narinfo hit costs a map write, not an index write.
type accessTracker struct {
	mu      sync.Mutex
	pending map[string]time.Time
}

// Touch records an access now: key is a store hash (narinfo hit) or a NAR object name
// ("nar/...", a download). Garbage collection reads these times.
func (c *Cache) Touch(key string) {
	now := time.Now()
	c.access.mu.Lock()
	if c.access.pending == nil {
		c.access.pending = make(map[string]time.Time)
	}
	c.access.pending[key] = now
	c.access.mu.Unlock()
}

// FlushAccess writes the batched access times to the index.
func (c *Cache) FlushAccess() error {
	c.access.mu.Lock()
	batch := c.access.pending
	c.access.pending = nil
	c.access.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	return c.index.SetAccessTimes(batch)
}

// RunAccessFlusher flushes access times every interval until ctx ends, then once more.
func (c *Cache) RunAccessFlusher(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := c.FlushAccess(); err != nil {
				c.log.Warn("flushing access times", "err", err)
			}
			return
		case <-t.C:
			if err := c.FlushAccess(); err != nil {
				c.log.Warn("flushing access times", "err", err)
			}
		}
	}
}
