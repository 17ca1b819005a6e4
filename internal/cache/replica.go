package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// Replicas: several servers may share one backend (an S3 bucket), each with its own index.
// A path uploaded through another replica reaches this one's index by read-through (a narinfo
// miss in the index looks in the backend, at most once per NegativeTTL for the same hash) and by
// the periodic sync, which also drops paths deleted elsewhere. See the README for the bounds.

// negativeCache remembers recent backend misses so that the misses substituters send in bulk
// do not each cost a backend request.
type negativeCache struct {
	mu      sync.Mutex
	entries map[string]time.Time
}

const maxNegativeEntries = 1 << 20

func (n *negativeCache) fresh(hash string, ttl time.Duration) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.entries[hash]
	return ok && time.Since(t) < ttl
}

func (n *negativeCache) add(hash string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil || len(n.entries) >= maxNegativeEntries {
		n.entries = make(map[string]time.Time)
	}
	n.entries[hash] = time.Now()
}

// readThrough looks for a narinfo the index lacks in the backend and indexes it. It returns
// ErrNotFound when the backend lacks it too.
func (c *Cache) readThrough(ctx context.Context, hash string) error {
	if !c.opts.ReadThrough {
		return ErrNotFound
	}
	if c.negative.fresh(hash, c.opts.NegativeTTL) {
		return ErrNotFound
	}
	found, err := c.indexIfInBackend(ctx, hash)
	if err != nil {
		return err
	}
	if !found {
		c.negative.add(hash)
		return ErrNotFound
	}
	return nil
}

// indexIfInBackend indexes the narinfo of hash if the backend has it, and reports whether it did.
func (c *Cache) indexIfInBackend(ctx context.Context, hash string) (bool, error) {
	fi, err := c.backend.Stat(ctx, hash+".narinfo")
	if errors.Is(err, backend.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := c.indexFromBackend(ctx, hash, fi.ModTime); err != nil {
		if errors.Is(err, backend.ErrNotExist) {
			return false, nil // removed in between
		}
		return false, err
	}
	return true, nil
}

// RunSync brings the index in line with the backend every interval (new narinfos are read,
// deleted ones dropped) until ctx ends.
func (c *Cache) RunSync(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := c.Reindex(ctx, false, nil)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("sync with backend failed", "err", err)
			}
			continue
		}
		if st.NarInfos > 0 || st.Removed > 0 {
			c.log.Info("synced with backend", "added", st.NarInfos, "removed", st.Removed, "invalid", st.Invalid)
		}
	}
}
