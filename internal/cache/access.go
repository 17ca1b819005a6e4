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

	// flushing is held from taking a batch until it is written: a flush (gc's, before it reads
	// the times) returns only once every access recorded before it is in the index, also those
	// in a batch the background flusher is still writing.
	flushing sync.Mutex
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
	c.access.flushing.Lock()
	defer c.access.flushing.Unlock()
	c.access.mu.Lock()
	batch := c.access.pending
	c.access.pending = nil
	c.access.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := c.index.SetAccessTimes(batch); err != nil {
		// Kept for the next flush; an access recorded since is newer and wins.
		c.access.mu.Lock()
		if c.access.pending == nil {
			c.access.pending = batch
		} else {
			for k, t := range batch {
				if _, ok := c.access.pending[k]; !ok {
					c.access.pending[k] = t
				}
			}
		}
		c.access.mu.Unlock()
		return err
	}
	return nil
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
