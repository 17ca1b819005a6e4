package index

// Narinfos (n/), the reverse keys of what they name (r/, R/), and the in-memory layer in front of
// them (memo.go).

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// NarInfo returns the served narinfo text of a store path hash. The slice may be shared with
// other callers: never modify it.
func (ix *Index) NarInfo(hash string) ([]byte, error) {
	text, known, gen := ix.memo.lookup(hash)
	if known {
		if text == nil {
			return nil, ErrNotFound
		}
		return text, nil
	}
	text, err := ix.get(prefixNarInfo + hash)
	if errors.Is(err, ErrNotFound) {
		ix.memo.remember(hash, nil, gen)
	} else if err == nil {
		ix.memo.remember(hash, text, gen)
	}
	return text, err
}

// HasNarInfo reports whether the index has a narinfo for hash.
func (ix *Index) HasNarInfo(hash string) (bool, error) {
	_, err := ix.NarInfo(hash)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// PutNarInfo stores the narinfo text of hash, replacing any.
func (ix *Index) PutNarInfo(hash string, text []byte) error {
	err := ix.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(prefixNarInfo+hash), text)
	})
	ix.memo.invalidate(hash)
	if err != nil {
		return fmt.Errorf("index put narinfo %s: %w", hash, err)
	}
	return nil
}

// DeleteNarInfo removes the narinfo of hash; a missing one is not an error.
func (ix *Index) DeleteNarInfo(hash string) error {
	err := ix.db.Update(func(txn *badger.Txn) error {
		return txn.Delete([]byte(prefixNarInfo + hash))
	})
	ix.memo.invalidate(hash)
	if err != nil {
		return fmt.Errorf("index delete narinfo %s: %w", hash, err)
	}
	return nil
}

// NarInfos calls fn for every indexed narinfo. fn must not keep text after it returns.
func (ix *Index) NarInfos(fn func(hash string, text []byte) error) error {
	return ix.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte(prefixNarInfo)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			hash := string(item.Key()[len(prefixNarInfo):])
			if err := item.Value(func(v []byte) error { return fn(hash, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// CommitNarInfo stores the narinfo text of hash, that it names the NAR object nar, and that it
// references the store hashes refs, in one transaction.
func (ix *Index) CommitNarInfo(hash string, text []byte, nar string, refs []string) error {
	err := ix.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte(prefixNarInfo+hash), text); err != nil {
			return err
		}
		for _, r := range refs {
			if err := txn.Set([]byte(prefixReferrer+r+"\x00"+hash), nil); err != nil {
				return err
			}
		}
		return txn.Set([]byte(prefixRef+nar+"\x00"+hash), nil)
	})
	ix.memo.invalidate(hash)
	if err != nil {
		return fmt.Errorf("index commit narinfo %s: %w", hash, err)
	}
	return nil
}

// RemoveNarInfo deletes what CommitNarInfo wrote.
func (ix *Index) RemoveNarInfo(hash, nar string, refs []string) error {
	err := ix.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete([]byte(prefixNarInfo + hash)); err != nil {
			return err
		}
		for _, r := range refs {
			if err := txn.Delete([]byte(prefixReferrer + r + "\x00" + hash)); err != nil {
				return err
			}
		}
		return txn.Delete([]byte(prefixRef + nar + "\x00" + hash))
	})
	ix.memo.invalidate(hash)
	if err != nil {
		return fmt.Errorf("index remove narinfo %s: %w", hash, err)
	}
	return nil
}

// Referrers returns the store hashes whose narinfos reference hash.
func (ix *Index) Referrers(hash string) ([]string, error) {
	var out []string
	p := prefixReferrer + hash + "\x00"
	err := ix.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(p)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out = append(out, string(it.Item().Key()[len(p):]))
		}
		return nil
	})
	return out, err
}

// NarReferenced reports whether any narinfo names the NAR object.
func (ix *Index) NarReferenced(nar string) (bool, error) {
	found := false
	prefix := []byte(prefixRef + nar + "\x00")
	err := ix.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		it.Rewind()
		found = it.Valid()
		return nil
	})
	return found, err
}

// ForgetPath drops everything the index keeps about a store path except its narinfo.
func (ix *Index) ForgetPath(hash string) error {
	return ix.db.Update(func(txn *badger.Txn) error {
		for _, p := range []string{prefixAccess, prefixCreated, prefixPulled} {
			if err := txn.Delete([]byte(p + hash)); err != nil {
				return err
			}
		}
		return nil
	})
}
