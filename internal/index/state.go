package index

// The state of the index itself: clean or dirty (m/dirty), new, and reachable.

import (
	"errors"

	badger "github.com/dgraph-io/badger/v4"
)

// Dirty reports whether the index was left open by a process that did not close it cleanly,
// so writes to the backend may have happened that the index missed.
func (ix *Index) Dirty() (bool, error) {
	v, err := ix.get(keyDirty)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil && len(v) == 1 && v[0] == 1, err
}

// Fresh reports whether no server has ever run on this index (it was just created, or deleted
// and created again): the backend may hold narinfos it has never seen.
func (ix *Index) Fresh() (bool, error) {
	_, err := ix.get(keyDirty)
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	return false, err
}

// SetDirty marks (true) or clears (false) the dirty flag. Either way the index is no longer
// Fresh.
func (ix *Index) SetDirty(dirty bool) error {
	v := []byte{0}
	if dirty {
		v[0] = 1
	}
	return ix.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyDirty), v) })
}

// Ping reads from the database itself (not the in-memory layer): is the index usable?
func (ix *Index) Ping() error {
	_, err := ix.get(prefixNarInfo + "ping")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
