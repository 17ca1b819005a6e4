package index

// Marks on store paths and NAR objects: pins (p/) and pulled from an upstream (u/).

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Pin marks the closure of hash as never collected; Unpin removes the mark.
func (ix *Index) Pin(hash string) error { return ix.set(prefixPin+hash, encTime(time.Now())) }

// Unpin removes a pin; a missing pin is ErrNotFound.
func (ix *Index) Unpin(hash string) error {
	if _, err := ix.get(prefixPin + hash); err != nil {
		return err
	}
	return ix.del(prefixPin + hash)
}

// Pins calls fn for every pinned store hash.
func (ix *Index) Pins(fn func(hash string, since time.Time)) error {
	return ix.iterate(prefixPin, func(k string, v []byte) error { fn(k, decTime(v)); return nil })
}

// MarkPulled records that the store paths or NAR objects ("nar/...") keys were pulled from an
// upstream rather than uploaded.
func (ix *Index) MarkPulled(keys ...string) error {
	now := encTime(time.Now())
	return ix.db.Update(func(txn *badger.Txn) error {
		for _, k := range keys {
			if err := txn.Set([]byte(prefixPulled+k), now); err != nil {
				return fmt.Errorf("index mark %s pulled: %w", k, err)
			}
		}
		return nil
	})
}

// PulledAmong returns which of keys (store hashes or "nar/..." names) are marked pulled, read in
// one transaction.
func (ix *Index) PulledAmong(keys []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := ix.db.View(func(txn *badger.Txn) error {
		for _, k := range keys {
			_, err := txn.Get([]byte(prefixPulled + k))
			switch {
			case err == nil:
				out[k] = true
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index pulled marks: %w", err)
	}
	return out, nil
}

// Pulled calls fn for every store hash and NAR object ("nar/...") marked pulled.
func (ix *Index) Pulled(fn func(key string, since time.Time)) error {
	return ix.iterate(prefixPulled, func(k string, v []byte) error { fn(k, decTime(v)); return nil })
}
