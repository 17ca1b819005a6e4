package cache

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// accessTracker batches last-access times in memory; a flusher writes them to the index, so a
// narinfo hit costs a map write, not an index write.
type accessTracker struct {
	mu      sync.Mutex
	pending map[string]access

	// Hits on pulled paths (narinfo) and pulled NAR objects (nar), counted as each batch is
	// flushed: a Touch stays a map write, and the marks are read once per key per batch.
	pulledHits [2]atomic.Uint64

	// flushing is held from taking a batch until it is written: a flush (gc's, before it reads
	// the times) returns only once every access recorded before it is in the index, also those
	// in a batch the background flusher is still writing.
	flushing sync.Mutex
}

// access is a key's latest access in a batch and how many there were.
type access struct {
	t time.Time
	n uint64
}

// Touch records an access now: key is a store hash (narinfo hit) or a NAR object name
// ("nar/...", a download). Garbage collection reads these times.
func (c *Cache) Touch(key string) {
	now := time.Now()
	c.access.mu.Lock()
	if c.access.pending == nil {
		c.access.pending = make(map[string]access)
	}
	a := c.access.pending[key]
	c.access.pending[key] = access{t: now, n: a.n + 1}
	c.access.mu.Unlock()
}

// PulledHits are the narinfo hits (GET/HEAD) and NAR downloads served from paths and NAR
// objects pulled from an upstream, as of the last flush of access times.
func (c *Cache) PulledHits() (narinfos, nars uint64) {
	return c.access.pulledHits[0].Load(), c.access.pulledHits[1].Load()
}

// countPulledHits adds the batch's hits on pulled keys to PulledHits.
func (c *Cache) countPulledHits(batch map[string]access) {
	keys := make([]string, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	pulled, err := c.index.PulledAmong(keys)
	if err != nil {
		c.log.Warn("counting hits on pulled paths", "err", err)
		return
	}
	for k := range pulled {
		i := 0
		if strings.HasPrefix(k, "nar/") {
			i = 1
		}
		c.access.pulledHits[i].Add(batch[k].n)
	}
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
	times := make(map[string]time.Time, len(batch))
	for k, a := range batch {
		times[k] = a.t
	}
	if err := c.index.SetAccessTimes(times); err != nil {
		// Kept for the next flush; an access recorded since is newer and wins.
		c.access.mu.Lock()
		if c.access.pending == nil {
			c.access.pending = batch
		} else {
			for k, t := range batch {
				if a, ok := c.access.pending[k]; !ok {
					c.access.pending[k] = t
				} else {
					c.access.pending[k] = access{t: a.t, n: a.n + t.n}
				}
			}
		}
		c.access.mu.Unlock()
		return err
	}
	c.countPulledHits(batch)
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
