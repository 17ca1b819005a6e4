// Package index is the Badger index of a cache: the signed narinfo of every served store path and
// a record per stored NAR, so that narinfo lookups (hits and the far more common misses) never
// touch the backend.
//
// The index is a cache of the backend, never the source of truth: everything in it can be rebuilt
// from the backend (see cache.Reindex). It must never hold something the backend does not.
package index

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	badger "github.com/dgraph-io/badger/v4"
)

// ErrNotFound is returned (wrapped) for a key the index does not hold.
var ErrNotFound = errors.New("not in index")

const (
	prefixNarInfo = "n/" // n/<store hash> -> narinfo text as served
	prefixNar     = "f/" // f/<nar object name> -> NarRecord JSON
	prefixNarHash = "h/" // h/<sha256:nix32 NarHash> -> name of the object storing that NAR
	prefixAlias   = "a/" // a/<uploaded NAR name> -> AliasRecord JSON
	prefixAliasTo = "A/" // A/<stored NAR name>\x00<uploaded NAR name>: the aliases of an object
	keyDirty      = "m/dirty"
	// keyAliasTo marks an index whose A/ keys are complete; one written before them gets them
	// on Open.
	keyAliasTo = "m/alias-to"
)

// NarRecord is what the server verified about a stored NAR file.
type NarRecord struct {
	NarHash  string `json:"narHash"`  // sha256:<nix32> of the uncompressed NAR
	NarSize  uint64 `json:"narSize"`  // bytes of the uncompressed NAR
	FileHash string `json:"fileHash"` // sha256:<nix32> of the stored file
	FileSize uint64 `json:"fileSize"` // bytes of the stored file
}

// Index wraps a Badger database.
type Index struct {
	db   *badger.DB
	memo *memo
}

// Open opens (creating if needed) the index in dir.
func Open(dir string, log *slog.Logger) (*Index, error) {
	db, err := badger.Open(BadgerOptions(dir).WithLogger(badgerLogger{log}))
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", dir, err)
	}
	ix := &Index{db: db, memo: newMemo()}
	if err := ix.indexAliasTargets(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open index %s: %w", dir, err)
	}
	return ix, nil
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

// BadgerOptions are the options the index opens its database in dir with (exported for
// bench/indexscale). Badger's memory knobs are set well below its defaults: the index holds
// small values, and a cache server should stay small in RSS.
func BadgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(nil).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithValueThreshold(4 << 10).
		WithNumCompactors(2).
		WithCompactL0OnClose(true)
}

// Close flushes and closes the database.
func (ix *Index) Close() error { return ix.db.Close() }

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

// AliasRecord remembers a NAR upload the server stored under another name (transcoded, or
// deduplicated against an object holding the same NAR), so that the narinfo PUT that follows,
// which names the uploaded URL, can be resolved.
type AliasRecord struct {
	Stored   string `json:"stored"`   // object name the NAR is stored under
	FileSize uint64 `json:"fileSize"` // size of the file as uploaded
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

// Clear drops every narinfo and NAR record (before a full reindex).
func (ix *Index) Clear() error {
	for _, p := range []string{prefixNarInfo, prefixNar, prefixNarHash, prefixAlias, prefixAliasTo, prefixOrphan, prefixRef, prefixReferrer} {
		if err := ix.db.DropPrefix([]byte(p)); err != nil {
			ix.memo.invalidate("")
			return fmt.Errorf("index clear: %w", err)
		}
	}
	ix.memo.invalidate("")
	return nil
}

// badgerLogger routes Badger's chatter to slog; its info level is noise for an operator.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.log.Debug(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.log.Debug(fmt.Sprintf(f, a...), "component", "badger")
}

// Ping reads from the database itself (not the in-memory layer): is the index usable?
func (ix *Index) Ping() error {
	_, err := ix.get(prefixNarInfo + "ping")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
