package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
)

// ReindexStats summarises a reindex.
type ReindexStats struct {
	NarInfos int // narinfos indexed
	Invalid  int // narinfos in the backend that could not be read or parsed (skipped, logged)
	Removed  int // index entries dropped because the backend no longer has them
}

// maxNarInfoSize bounds what is read of a narinfo object.
const maxNarInfoSize = 1 << 20

// Reindex makes the index agree with the backend: every narinfo in the backend is indexed (with
// the record of the NAR it points at, taken from the narinfo that was verified when committed)
// and index entries whose narinfo is gone are dropped. With full false, narinfos the index
// already holds are not read again (narinfos never change once committed), which makes a
// periodic sync cost one listing. progress, if not nil, is called every 1000 narinfos.
func (c *Cache) Reindex(ctx context.Context, full bool, progress func(ReindexStats)) (ReindexStats, error) {
	var st ReindexStats
	seen := make(map[string]struct{})
	err := c.backend.List(ctx, "", func(fi backend.FileInfo) error {
		hash, ok := strings.CutSuffix(fi.Name, ".narinfo")
		if !ok || !ValidStoreHash(hash) {
			return nil
		}
		seen[hash] = struct{}{}
		if !full {
			if ok, err := c.index.HasNarInfo(hash); err != nil {
				return err
			} else if ok {
				return nil
			}
		}
		err := c.indexFromBackend(ctx, hash, fi.ModTime)
		if errors.Is(err, backend.ErrNotExist) {
			delete(seen, hash) // removed while listing
			return nil
		}
		if err != nil {
			var ie *InputError
			if !errors.As(err, &ie) {
				return err
			}
			delete(seen, hash)
			st.Invalid++
			c.log.Warn("reindex: skipping unreadable narinfo", "object", fi.Name, "err", err)
			return nil
		}
		st.NarInfos++
		if progress != nil && st.NarInfos%1000 == 0 {
			progress(st)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("reindex: %w", err)
	}
	var stale []string
	err = c.index.NarInfos(func(hash string, _ []byte) error {
		if _, ok := seen[hash]; !ok {
			stale = append(stale, hash)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("reindex: %w", err)
	}
	for _, h := range stale {
		if err := c.forgetNarInfo(h); err != nil {
			return st, fmt.Errorf("reindex: %w", err)
		}
		st.Removed++
	}
	return st, nil
}

// indexFromBackend reads the narinfo of hash from the backend and indexes it, with the record of
// the NAR it names.
func (c *Cache) indexFromBackend(ctx context.Context, hash string, modTime time.Time) error {
	name := hash + ".narinfo"
	text, ni, err := c.readNarInfo(ctx, name)
	if err != nil {
		return err
	}
	return c.indexNarInfo(hash, text, ni, modTime)
}

// indexNarInfo indexes the narinfo text of hash as stored in the backend, parsed as ni, with the
// record of the NAR it names.
func (c *Cache) indexNarInfo(hash string, text []byte, ni *narinfo.NarInfo, modTime time.Time) error {
	if ni.HashPart() != hash {
		return inputErr("StorePath", "%s.narinfo names %s", hash, ni.StorePath)
	}
	if !ni.FileHash.IsZero() && ni.FileSize != 0 {
		rec := index.NarRecord{NarHash: ni.NarHash.String(), NarSize: ni.NarSize, FileHash: ni.FileHash.String(), FileSize: ni.FileSize}
		if err := c.index.PutNar(ni.URL, rec); err != nil {
			return err
		}
	}
	if err := c.index.CommitNarInfo(hash, text, ni.URL, refHashes(ni)); err != nil {
		return err
	}
	if err := c.index.PutNarHash(ni.NarHash.String(), ni.URL); err != nil {
		return err
	}
	// A narinfo holds its NAR: a mark this index set before it knew of the narinfo (committed
	// through another replica) is stale, and would start the NAR's grace period too early.
	if err := c.index.ClearOrphaned(ni.URL); err != nil {
		return err
	}
	return c.index.SetCreated(hash, modTime)
}

func (c *Cache) readNarInfo(ctx context.Context, name string) ([]byte, *narinfo.NarInfo, error) {
	obj, err := c.backend.Open(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	defer obj.Close()
	text, err := io.ReadAll(io.LimitReader(obj, maxNarInfoSize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(text) > maxNarInfoSize {
		return nil, nil, inputErr("narinfo", "%s is larger than %d bytes", name, maxNarInfoSize)
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return nil, nil, &InputError{Field: "narinfo", Err: err}
	}
	return text, ni, nil
}

// forgetNarInfo drops a narinfo from the index only (the backend no longer has it).
func (c *Cache) forgetNarInfo(hash string) error {
	text, err := c.index.NarInfo(hash)
	if err != nil {
		return err
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return c.index.RemoveNarInfo(hash, "", nil)
	}
	return c.index.RemoveNarInfo(hash, ni.URL, refHashes(ni))
}
