package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// StagingPrefix is where uploads wait until they are verified and named.
const StagingPrefix = "staging/"

// CleanStaging removes staged uploads older than olderThan, left by a process that died.
func (c *Cache) CleanStaging(ctx context.Context, olderThan time.Duration) (int, error) {
	var stale []string
	err := c.backend.List(ctx, StagingPrefix, func(fi backend.FileInfo) error {
		if time.Since(fi.ModTime) > olderThan {
			stale = append(stale, fi.Name)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range stale {
		if err := c.backend.Remove(ctx, name); err == nil {
			n++
		}
	}
	return n, nil
}

// RemoveLeftovers removes what writes that never finished left behind: staged uploads older than
// stagingAge, and every temporary file of a backend that has them (disk). Only for start-up,
// once the index lock is held: no write of this cache can be in flight then. It returns what it
// removed.
func (c *Cache) RemoveLeftovers(ctx context.Context, stagingAge time.Duration) ([]backend.FileInfo, error) {
	var left []backend.FileInfo
	err := c.backend.List(ctx, StagingPrefix, func(fi backend.FileInfo) error {
		if time.Since(fi.ModTime) >= stagingAge {
			left = append(left, fi)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var removed []backend.FileInfo
	for _, fi := range left {
		if err := c.backend.Remove(ctx, fi.Name); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return removed, fmt.Errorf("remove %s: %w", fi.Name, err)
		}
		removed = append(removed, fi)
	}
	temps, ok := c.backend.(backend.Temps)
	if !ok {
		return removed, nil
	}
	files, err := temps.Temps(ctx)
	if err != nil {
		return removed, err
	}
	for _, fi := range files {
		if err := temps.RemoveTemp(ctx, fi.Name); err != nil {
			return removed, fmt.Errorf("remove %s: %w", fi.Name, err)
		}
		removed = append(removed, fi)
	}
	return removed, nil
}

// move renames an object, through the backend's Mover if it has one.
func (c *Cache) move(ctx context.Context, from, to string) error {
	return backend.Move(ctx, c.backend, from, to)
}
