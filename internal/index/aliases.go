package index

// Upload aliases: a NAR uploaded under one name and stored under another (a/), and the aliases of
// each stored object (A/), so that deleting an object finds its aliases without a scan.

import (
	"encoding/json"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// AliasRecord remembers a NAR upload the server stored under another name (transcoded, or
// deduplicated against an object holding the same NAR), so that the narinfo PUT that follows,
// which names the uploaded URL, can be resolved.
type AliasRecord struct {
	Stored   string `json:"stored"`   // object name the NAR is stored under
	FileSize uint64 `json:"fileSize"` // size of the file as uploaded
}

// Alias returns where an uploaded NAR name was stored.
func (ix *Index) Alias(uploaded string) (AliasRecord, error) {
	v, err := ix.get(prefixAlias + uploaded)
	if err != nil {
		return AliasRecord{}, err
	}
	a, err := decodeAlias(v)
	if err != nil {
		return AliasRecord{}, fmt.Errorf("index alias %s: %w", uploaded, err)
	}
	return a, nil
}

func decodeAlias(v []byte) (AliasRecord, error) {
	var a AliasRecord
	err := json.Unmarshal(v, &a)
	return a, err
}

// PutAlias records where an uploaded NAR name was stored.
func (ix *Index) PutAlias(uploaded string, a AliasRecord) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	err = ix.db.Update(func(txn *badger.Txn) error {
		if item, err := txn.Get([]byte(prefixAlias + uploaded)); err == nil {
			var old AliasRecord
			if err := item.Value(func(v []byte) error { old, err = decodeAlias(v); return err }); err == nil && old.Stored != a.Stored {
				if err := txn.Delete([]byte(prefixAliasTo + old.Stored + "\x00" + uploaded)); err != nil {
					return err
				}
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := txn.Set([]byte(prefixAliasTo+a.Stored+"\x00"+uploaded), nil); err != nil {
			return err
		}
		return txn.Set([]byte(prefixAlias+uploaded), v)
	})
	if err != nil {
		return fmt.Errorf("index put alias %s: %w", uploaded, err)
	}
	return nil
}

// DeleteAliasesTo removes every alias that resolves to the NAR object stored, and returns the
// uploaded names they had.
func (ix *Index) DeleteAliasesTo(stored string) ([]string, error) {
	var dead []string
	p := prefixAliasTo + stored + "\x00"
	err := ix.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(p)})
		var keys [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
		ix.keysVisited.Add(int64(len(keys)))
		for _, k := range keys {
			uploaded := string(k[len(p):])
			if err := txn.Delete([]byte(prefixAlias + uploaded)); err != nil {
				return err
			}
			if err := txn.Delete(k); err != nil {
				return err
			}
			dead = append(dead, uploaded)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index delete aliases to %s: %w", stored, err)
	}
	return dead, nil
}

// indexAliasTargets writes the A/ key of every alias in an index made before they existed.
func (ix *Index) indexAliasTargets() error {
	if _, err := ix.get(keyAliasTo); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	var keys [][]byte
	err := ix.iterate(prefixAlias, func(k string, v []byte) error {
		if a, err := decodeAlias(v); err == nil {
			keys = append(keys, []byte(prefixAliasTo+a.Stored+"\x00"+k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	wb := ix.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Set(k, nil); err != nil {
			return err
		}
	}
	if err := wb.Set([]byte(keyAliasTo), nil); err != nil {
		return err
	}
	return wb.Flush()
}
