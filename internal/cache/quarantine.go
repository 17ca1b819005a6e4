package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// Taking a NAR out of service (internal/verify decides which, and in which order): its index
// records go first, under its NAR lock, so that a narinfo naming it is verified against the
// backend again and an upload of the same NAR is stored afresh; the object itself is moved, not
// deleted, under QuarantinePrefix.

// QuarantinePrefix is where quarantined objects are moved, under their original name.
const QuarantinePrefix = "quarantine/"

// ForgetNar drops the index's records of a NAR object (its record, NarHash entry, orphan mark and
// aliases) under its NAR lock, if the object is still the one that was checked (seen; nil for
// one that was missing). A narinfo naming it is then verified against the backend, and an upload
// of the same NAR is stored afresh instead of being deduplicated against it.
func (c *Cache) ForgetNar(ctx context.Context, name string, seen *backend.FileInfo) (unchanged bool, err error) {
	mu := &c.narLocks[lockSlot(name)]
	mu.Lock()
	defer mu.Unlock()
	fi, err := c.backend.Stat(ctx, name)
	switch {
	case errors.Is(err, backend.ErrNotExist):
		if seen != nil {
			return false, nil // gone since it was checked (collected): nothing to forget
		}
	case err != nil:
		return false, err
	case seen == nil || !SameObject(fi, *seen):
		return false, nil
	}
	return true, c.forgetNarLocked(ctx, name)
}

// forgetNarLocked drops what the index knows of a NAR object, and its aliases. The caller holds
// its nar lock.
func (c *Cache) forgetNarLocked(ctx context.Context, name string) error {
	rec, _ := c.index.Nar(name)
	if err := c.index.ForgetNar(name, rec.NarHash); err != nil {
		return err
	}
	return c.forgetAliasesTo(ctx, name)
}

// Quarantine moves an object to quarantine/<name> under its NAR lock, after forgetting what
// the index knows of it (index first, as deleteNar does), if still(its current info) says it
// should go.
func (c *Cache) Quarantine(ctx context.Context, name string, still func(backend.FileInfo) (bool, error)) (bool, error) {
	mu := &c.narLocks[lockSlot(name)]
	mu.Lock()
	defer mu.Unlock()
	fi, err := c.backend.Stat(ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if ok, err := still(fi); err != nil || !ok {
		return false, err
	}
	if !strings.HasPrefix(name, StagingPrefix) {
		if err := c.forgetNarLocked(ctx, name); err != nil {
			return false, err
		}
	}
	if err := c.move(ctx, name, QuarantinePrefix+name); err != nil {
		return false, fmt.Errorf("move to %s: %w", QuarantinePrefix, err)
	}
	return true, nil
}

// SameObject reports whether two descriptions are of the same object version. Times are compared
// to the second: a listing and a stat may report them at different precisions.
func SameObject(a, b backend.FileInfo) bool {
	return a.Size == b.Size && a.ModTime.Truncate(time.Second).Equal(b.ModTime.Truncate(time.Second))
}
