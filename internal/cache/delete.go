package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/journal"
	"github.com/cached-dev/cached/internal/narinfo"
)

// DeleteNarInfo removes the narinfo of a store path (backend first: it is the source of truth,
// then the index) and its listing, and marks its NAR orphaned from now on, starting the NAR's
// grace period. The NAR itself stays.
//
// A narinfo that another one references is not deleted (ErrReferenced): a collection deletes
// dependents first, so a referrer here is an upload that committed since the collection began.
func (c *Cache) DeleteNarInfo(ctx context.Context, hash string) error {
	mu := &c.commitLocks[lockSlot(hash)]
	mu.Lock()
	defer mu.Unlock()
	c.refMu.Lock()
	defer c.refMu.Unlock()
	text, err := c.index.NarInfo(hash)
	if err != nil {
		return err
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return fmt.Errorf("indexed narinfo %s: %w", hash, err)
	}
	referrers, err := c.index.Referrers(hash)
	if err != nil {
		return err
	}
	for _, r := range referrers {
		if r != hash {
			return fmt.Errorf("%s is referenced by %s: %w", ni.StorePath, r, ErrReferenced)
		}
	}
	if err := c.backend.Remove(ctx, hash+".narinfo"); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("delete narinfo %s: %w", hash, err)
	}
	c.publish(journal.Record{Op: journal.Delete, Hash: hash})
	if err := c.index.RemoveNarInfo(hash, ni.URL, refHashes(ni)); err != nil {
		return err
	}
	if err := c.backend.Remove(ctx, hash+".ls"); err != nil && !errors.Is(err, backend.ErrNotExist) {
		c.log.Warn("gc: removing listing", "hash", hash, "err", err)
	}
	if err := c.index.ForgetPath(hash); err != nil {
		return err
	}
	// The NAR's grace period starts now, even if an older mark survived (set while another
	// replica's narinfo for it was not yet in this index).
	if err := c.index.ClearOrphaned(ni.URL); err != nil {
		return err
	}
	return c.index.SetOrphaned(ni.URL, time.Now())
}

// DeleteNarIfOrphaned removes a NAR object if it is still marked orphaned (no narinfo committed
// for it since) and has been for longer than grace. A narinfo commit naming the NAR clears the
// mark under the same lock, so a racing upload never ends with a narinfo pointing at nothing.
func (c *Cache) DeleteNarIfOrphaned(ctx context.Context, name string, grace time.Duration) (deleted bool, size int64, err error) {
	mu := &c.narLocks[lockSlot(name)]
	mu.Lock()
	defer mu.Unlock()
	since, err := c.index.Orphaned(name)
	if errors.Is(err, index.ErrNotFound) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	// A narinfo committed since the mark was set holds the NAR.
	if ref, err := c.index.NarReferenced(name); err != nil || ref {
		if ref {
			err = c.index.ClearOrphaned(name)
		}
		return false, 0, err
	}
	if time.Since(since) < grace {
		return false, 0, nil
	}
	return c.deleteNar(ctx, name)
}

// deleteNar removes a NAR object and what the index knows of it. The caller holds its nar lock.
func (c *Cache) deleteNar(ctx context.Context, name string) (bool, int64, error) {
	var size int64
	if fi, err := c.backend.Stat(ctx, name); err == nil {
		size = fi.Size
	}
	// Index first: a concurrent narinfo PUT then finds no record, looks in the backend, and
	// either finds the NAR (not yet removed; it re-verifies it) or refuses with 400.
	if err := c.forgetNarLocked(ctx, name); err != nil {
		return false, 0, err
	}
	if err := c.backend.Remove(ctx, name); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return false, 0, fmt.Errorf("delete %s: %w", name, err)
	}
	return true, size, nil
}

// MarkUnreferencedNars marks orphaned every NAR object (and staged upload) that no narinfo
// names and that has no mark yet, dating the mark from the object's modification time: an upload
// whose narinfo never came, or has not come yet, gets the same grace period as a NAR whose
// narinfo was deleted. Each check runs under the NAR's lock, against the index's references.
func (c *Cache) MarkUnreferencedNars(ctx context.Context) (int, error) {
	var names []backend.FileInfo
	if err := c.backend.List(ctx, "nar/", func(fi backend.FileInfo) error {
		names = append(names, fi)
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	for _, fi := range names {
		marked, err := c.markIfUnreferenced(fi)
		if err != nil {
			return n, err
		}
		if marked {
			n++
		}
	}
	return n, nil
}

func (c *Cache) markIfUnreferenced(fi backend.FileInfo) (bool, error) {
	mu := &c.narLocks[lockSlot(fi.Name)]
	mu.Lock()
	defer mu.Unlock()
	if _, err := c.index.Orphaned(fi.Name); err == nil {
		return false, nil
	}
	ref, err := c.index.NarReferenced(fi.Name)
	if err != nil || ref {
		return false, err
	}
	return true, c.index.SetOrphaned(fi.Name, fi.ModTime)
}

// UnreferencedSince is since when no narinfo has named a NAR object: its orphan mark when a
// narinfo naming it was deleted after it was written, else its modification time.
func (c *Cache) UnreferencedSince(fi backend.FileInfo) time.Time {
	since := fi.ModTime
	if t, err := c.index.Orphaned(fi.Name); err == nil && t.After(since) {
		since = t
	}
	return since
}
