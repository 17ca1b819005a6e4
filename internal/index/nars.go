package index

// NAR objects: what was verified about each (f/), where a NAR is stored by its NarHash (h/), and
// since when an object has had no narinfo (o/).

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// NarRecord is what the server verified about a stored NAR file.
type NarRecord struct {
	NarHash  string `json:"narHash"`  // sha256:<nix32> of the uncompressed NAR
	NarSize  uint64 `json:"narSize"`  // bytes of the uncompressed NAR
	FileHash string `json:"fileHash"` // sha256:<nix32> of the stored file
	FileSize uint64 `json:"fileSize"` // bytes of the stored file
}

// Nar returns what was verified about the stored NAR object name ("nar/....nar.xz").
func (ix *Index) Nar(name string) (NarRecord, error) {
	val, err := ix.get(prefixNar + name)
	if err != nil {
		return NarRecord{}, err
	}
	var rec NarRecord
	if err := json.Unmarshal(val, &rec); err != nil {
		return NarRecord{}, fmt.Errorf("index nar %s: %w", name, err)
	}
	return rec, nil
}

// PutNar records a verified NAR object.
func (ix *Index) PutNar(name string, rec NarRecord) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = ix.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(prefixNar+name), val)
	})
	if err != nil {
		return fmt.Errorf("index put nar %s: %w", name, err)
	}
	return nil
}

// DeleteNar forgets a NAR object; a missing one is not an error.
func (ix *Index) DeleteNar(name string) error {
	err := ix.db.Update(func(txn *badger.Txn) error {
		return txn.Delete([]byte(prefixNar + name))
	})
	if err != nil {
		return fmt.Errorf("index delete nar %s: %w", name, err)
	}
	return nil
}

// NarByHash returns the name of the object that stores the NAR with this NarHash.
func (ix *Index) NarByHash(narHash string) (string, error) {
	v, err := ix.get(prefixNarHash + narHash)
	return string(v), err
}

// PutNarHash records that the NAR with narHash is stored as name.
func (ix *Index) PutNarHash(narHash, name string) error {
	err := ix.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(prefixNarHash+narHash), []byte(name))
	})
	if err != nil {
		return fmt.Errorf("index put nar hash %s: %w", narHash, err)
	}
	return nil
}

// DeleteNarHash forgets where the NAR with narHash is stored.
func (ix *Index) DeleteNarHash(narHash string) error {
	return ix.db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(prefixNarHash + narHash)) })
}

// ForgetNar drops everything the index keeps about a NAR object.
func (ix *Index) ForgetNar(name, narHash string) error {
	return ix.db.Update(func(txn *badger.Txn) error {
		keys := []string{prefixNar + name, prefixOrphan + name, prefixAccess + name, prefixPulled + name}
		if narHash != "" {
			item, err := txn.Get([]byte(prefixNarHash + narHash))
			if err == nil {
				if v, _ := item.ValueCopy(nil); string(v) == name {
					keys = append(keys, prefixNarHash+narHash)
				}
			}
		}
		for _, k := range keys {
			if err := txn.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Orphaned returns since when the NAR object has had no narinfo, or ErrNotFound.
func (ix *Index) Orphaned(name string) (time.Time, error) {
	v, err := ix.get(prefixOrphan + name)
	if err != nil {
		return time.Time{}, err
	}
	return decTime(v), nil
}

// SetOrphaned records that no narinfo points at the NAR object since t (kept if already set).
func (ix *Index) SetOrphaned(name string, t time.Time) error {
	if _, err := ix.get(prefixOrphan + name); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return ix.set(prefixOrphan+name, encTime(t))
}

// ClearOrphaned forgets the orphan mark of a NAR object (a narinfo points at it again).
func (ix *Index) ClearOrphaned(name string) error { return ix.del(prefixOrphan + name) }

// Orphans calls fn for every NAR object marked orphaned.
func (ix *Index) Orphans(fn func(name string, since time.Time)) error {
	return ix.iterate(prefixOrphan, func(k string, v []byte) error { fn(k, decTime(v)); return nil })
}
