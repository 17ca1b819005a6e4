package index

import (
	"encoding/json"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Batch writes many records through one Badger WriteBatch, which commits them in large
// transactions of its own choosing: for bulk loads (bench/indexscale loads ten million paths with
// it). It writes the same keys as the one-record methods. It is not atomic as a whole, and readers
// may see part of it before Flush returns; the in-memory layer is cleared at Flush, so a lookup
// made during the load may be remembered stale until then. Safe for concurrent use.
type Batch struct {
	ix *Index
	wb *badger.WriteBatch
}

// NewBatch starts a batch; end it with Flush or Cancel.
func (ix *Index) NewBatch() *Batch { return &Batch{ix: ix, wb: ix.db.NewWriteBatch()} }

func (b *Batch) set(key string, val []byte) error {
	if err := b.wb.Set([]byte(key), val); err != nil {
		return fmt.Errorf("index batch set %s: %w", key, err)
	}
	return nil
}

// CommitNarInfo writes what Index.CommitNarInfo writes and the commit time (Index.SetCreated).
func (b *Batch) CommitNarInfo(hash string, text []byte, nar string, refs []string, created time.Time) error {
	if err := b.set(prefixNarInfo+hash, text); err != nil {
		return err
	}
	for _, r := range refs {
		if err := b.set(prefixReferrer+r+"\x00"+hash, nil); err != nil {
			return err
		}
	}
	if err := b.set(prefixRef+nar+"\x00"+hash, nil); err != nil {
		return err
	}
	return b.set(prefixCreated+hash, encTime(created))
}

// PutNar writes what Index.PutNar and Index.PutNarHash write for a verified NAR object.
func (b *Batch) PutNar(name string, rec NarRecord) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := b.set(prefixNar+name, val); err != nil {
		return err
	}
	return b.set(prefixNarHash+rec.NarHash, []byte(name))
}

// SetAccessTime writes a last-access time, as Index.SetAccessTimes does for one key.
func (b *Batch) SetAccessTime(key string, t time.Time) error {
	return b.set(prefixAccess+key, encTime(t))
}

// Flush writes what is left and waits for every commit of the batch.
func (b *Batch) Flush() error {
	err := b.wb.Flush()
	b.ix.memo.invalidate("")
	if err != nil {
		return fmt.Errorf("index batch: %w", err)
	}
	return nil
}

// Cancel drops what was not committed yet; call it (deferred) when Flush may not be reached.
func (b *Batch) Cancel() { b.wb.Cancel() }
