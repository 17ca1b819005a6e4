package index

import (
	"context"
	"encoding/json"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Counts is what the index holds, for people and dashboards.
type Counts struct {
	NarInfos  int64  // store paths served (narinfos)
	Nars      int64  // stored NAR files with a verified record
	FileBytes uint64 // sum of FileSize over those NAR files: the bytes the NARs take in storage
}

// Count walks the narinfo keys and every NAR record. It is a full scan of two prefixes, so it is
// for callers that cache the answer (cache.StatsCounter recounts at most every 30 s), never for a
// request path. It stops early when ctx is done.
func (ix *Index) Count(ctx context.Context) (Counts, error) {
	var c Counts
	err := ix.db.View(func(txn *badger.Txn) error {
		// Key-only: a narinfo's text is never read.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixNarInfo)})
		for it.Rewind(); it.Valid(); it.Next() {
			if c.NarInfos++; c.NarInfos%4096 == 0 && ctx.Err() != nil {
				it.Close()
				return ctx.Err()
			}
		}
		it.Close()

		it = txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte(prefixNar)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var rec struct {
				FileSize uint64 `json:"fileSize"`
			}
			item := it.Item()
			err := item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) })
			if err != nil {
				return fmt.Errorf("nar record %s: %w", item.Key()[len(prefixNar):], err)
			}
			c.FileBytes += rec.FileSize
			if c.Nars++; c.Nars%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	})
	if err != nil {
		return Counts{}, fmt.Errorf("index count: %w", err)
	}
	return c, nil
}
