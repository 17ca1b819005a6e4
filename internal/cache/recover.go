package cache

import (
	"context"
	"fmt"
	"time"
)

// Recover makes the index fit to serve from after whatever happened since it was last closed,
// and marks it in use (MarkClean ends that). The index is marked in use while a server runs:
// finding it so means the last one died without closing it, and narinfos it committed may be
// missing from the index, so it is rebuilt from the backend. A new index may sit on a backend
// that nix (or another replica) filled: it is indexed first too. Then the partial uploads a
// process that died mid-upload left are removed: all of them when the caller holds the index
// lock alone on its backend, only staged uploads older than an hour when replicas share it
// (Options.ReadThrough), since those may be uploading.
func (c *Cache) Recover(ctx context.Context) error {
	dirty, err := c.index.Dirty()
	if err != nil {
		return err
	}
	fresh, err := c.index.Fresh()
	if err != nil {
		return err
	}
	if dirty || fresh {
		if dirty {
			c.log.Warn("index was not closed cleanly; reindexing from the backend")
		} else {
			c.log.Info("new index; indexing what the backend holds")
		}
		stats, err := c.Reindex(ctx, false, nil)
		if err != nil {
			return err
		}
		c.log.Info("reindex done", "narinfos", stats.NarInfos, "invalid", stats.Invalid, "removed", stats.Removed)
	}
	stagingAge := time.Duration(0)
	if c.opts.ReadThrough {
		stagingAge = time.Hour
	}
	removed, err := c.RemoveLeftovers(ctx, stagingAge)
	for _, fi := range removed {
		c.log.Info("removed a partial upload left by an earlier run", "file", fi.Name, "size", fi.Size, "modified", fi.ModTime.UTC().Format(time.RFC3339))
	}
	if err != nil {
		return fmt.Errorf("removing partial uploads left by an earlier run: %w", err)
	}
	return c.index.SetDirty(true)
}

// MarkClean records that the index was closed cleanly: the next Recover need not rebuild it.
func (c *Cache) MarkClean() error { return c.index.SetDirty(false) }
