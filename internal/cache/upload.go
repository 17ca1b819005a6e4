package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
)

// PutNar stores an uploaded NAR file named name ("nar/<filehash>.nar.<ext>") after verifying,
// while it streams, that its bytes hash to the file hash in the name and that it decompresses to
// one valid NAR; it is recompressed to the configured store compression on the way. A NAR whose
// NarHash is already stored is kept only once. When the stored name differs from the uploaded
// one, the uploaded name becomes an alias that the following narinfo PUT resolves.
func (c *Cache) PutNar(ctx context.Context, name string, body io.Reader) (index.NarRecord, error) {
	nn, err := ParseNarName(name)
	if err != nil {
		return index.NarRecord{}, &InputError{Field: "URL", Err: err}
	}
	return c.putNar(ctx, nn, c.opts.storedCompression(nn.Compression), body, nil)
}

// NarWant is what a NAR must decompress to: sha256:<nix32> and its size.
type NarWant struct {
	NarHash string
	NarSize uint64
	// Verified, if not nil, is called as soon as every byte of the file has been read and
	// verified, before it is stored durably and committed.
	Verified func()
}

// putNar is PutNar storing in target compression, the NAR checked against want if not nil.
func (c *Cache) putNar(ctx context.Context, nn NarName, target string, body io.Reader, want *NarWant) (index.NarRecord, error) {
	name := nn.Name
	// Uploads land under a staging name: the stored name depends on the hash of the recompressed
	// bytes, known only at the end, and a NAR that is already stored must not be stored twice.
	var rnd [12]byte
	rand.Read(rnd[:])
	saveAs := StagingPrefix + hex.EncodeToString(rnd[:])
	res, err := c.ingest(ctx, nn, target, body, want, func(r io.Reader) error { return c.backend.Save(ctx, saveAs, r) })
	if err != nil {
		return index.NarRecord{}, err
	}
	fh, err := narinfo.ParseHash(res.stored.FileHash)
	if err != nil {
		return index.NarRecord{}, err
	}
	storedName := NarObjectName(fh, target)

	mu := &c.commitLocks[lockSlot(res.stored.NarHash)]
	mu.Lock()
	defer mu.Unlock()
	if existing, err := c.index.NarByHash(res.stored.NarHash); err == nil {
		// The same NAR may already be stored (perhaps in another compression): keep that one.
		rec, reused, err := c.reuseNar(ctx, existing, name, res.uploadedSize)
		if err != nil {
			return index.NarRecord{}, err
		}
		if reused {
			if err := c.backend.Remove(ctx, saveAs); err != nil && !errors.Is(err, backend.ErrNotExist) {
				c.log.Warn("removing duplicate upload", "object", saveAs, "err", err)
			}
			return rec, nil
		}
	}
	if err := c.commitNar(ctx, saveAs, storedName, name, res); err != nil {
		return index.NarRecord{}, err
	}
	return res.stored, nil
}

// reuseNar answers an upload with the stored NAR existing that has the same NarHash, if it is
// still there, restarting its grace period so that garbage collection leaves it for the narinfo
// to come. Everything runs under the NAR's lock, so a collection cannot remove it in between.
func (c *Cache) reuseNar(ctx context.Context, existing, uploaded string, uploadedSize uint64) (index.NarRecord, bool, error) {
	nmu := &c.narLocks[lockSlot(existing)]
	nmu.Lock()
	defer nmu.Unlock()
	if !c.narPresent(ctx, existing) {
		return index.NarRecord{}, false, nil
	}
	rec, err := c.index.Nar(existing)
	if err != nil {
		return index.NarRecord{}, false, err
	}
	if err := c.refreshOrphan(ctx, existing); err != nil {
		return index.NarRecord{}, false, err
	}
	return rec, true, c.aliasIfRenamed(ctx, uploaded, existing, uploadedSize)
}

// commitNar moves a verified staged upload to its stored name and records it (and the uploaded
// name as its alias), under the NAR's lock so that a collection deleting an older object of the
// same name cannot interleave.
func (c *Cache) commitNar(ctx context.Context, staged, name, uploaded string, res ingestResult) error {
	nmu := &c.narLocks[lockSlot(name)]
	nmu.Lock()
	defer nmu.Unlock()
	if err := c.move(ctx, staged, name); err != nil {
		return err
	}
	if err := c.index.PutNar(name, res.stored); err != nil {
		return err
	}
	if err := c.index.PutNarHash(res.stored.NarHash, name); err != nil {
		return err
	}
	// A fresh upload starts its grace period now, whatever an older copy's mark said.
	if err := c.refreshOrphan(ctx, name); err != nil {
		return err
	}
	return c.aliasIfRenamed(ctx, uploaded, name, res.uploadedSize)
}

// refreshOrphan starts the grace period of a NAR that was just uploaded (again) anew, so that
// garbage collection leaves it for the narinfo to come: it marks it orphaned as of now, unless a
// narinfo already references it. Left unmarked, an old object that an upload was deduplicated
// onto would be marked by the next collection as orphaned since its modification time, its grace
// period already over, and deleted before the narinfo arrived.
func (c *Cache) refreshOrphan(ctx context.Context, name string) error {
	if _, err := c.index.Orphaned(name); err == nil {
		if err := c.index.ClearOrphaned(name); err != nil {
			return err
		}
	} else if ref, err := c.index.NarReferenced(name); err != nil || ref {
		return err
	}
	return c.index.SetOrphaned(name, time.Now())
}

// narPresent reports whether a NAR object is both recorded in the index and in the backend.
func (c *Cache) narPresent(ctx context.Context, name string) bool {
	ok, err := c.narStored(ctx, name)
	return ok && err == nil
}

// narStored is narPresent that tells absence (false) from an index or backend that cannot answer
// (an error).
func (c *Cache) narStored(ctx context.Context, name string) (bool, error) {
	if _, err := c.index.Nar(name); errors.Is(err, index.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	_, err := c.backend.Stat(ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
