package index

// Reads and writes of single keys, and prefix scans, that the rest of the package is built on.

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

func (ix *Index) get(key string) ([]byte, error) {
	var val []byte
	err := ix.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("index get %s: %w", key, err)
	}
	return val, nil
}

func (ix *Index) set(key string, val []byte) error {
	err := ix.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(key), val) })
	if err != nil {
		return fmt.Errorf("index set %s: %w", key, err)
	}
	return nil
}

func (ix *Index) del(key string) error {
	err := ix.db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(key)) })
	if err != nil {
		return fmt.Errorf("index delete %s: %w", key, err)
	}
	return nil
}

// iterate calls fn with every key under prefix (prefix stripped) and its value; fn must not keep v.
func (ix *Index) iterate(prefix string, fn func(k string, v []byte) error) error {
	n := int64(0)
	defer func() { ix.keysVisited.Add(n) }()
	return ix.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
			item := it.Item()
			k := string(item.Key()[len(prefix):])
			if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}
