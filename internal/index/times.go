package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Times and marks that garbage collection reads. Keys:
//
//	t/<store hash>       last access of a narinfo (GET/HEAD hit), unix seconds
//	t/nar/<object>       last download of a NAR object
//	c/<store hash>       when the narinfo was committed
//	p/<store hash>       pinned: the closure is never collected
//	o/<nar object>       since when no narinfo points at the NAR (GC grace period)
//	u/<store hash>       pulled from an upstream (pull-through), and when
//	u/nar/<object>       a NAR object pulled from an upstream, and when
const (
	prefixAccess  = "t/"
	prefixCreated = "c/"
	prefixPin     = "p/"
	prefixOrphan  = "o/"
	prefixPulled  = "u/"
)

func encTime(t time.Time) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t.Unix()))
	return b[:]
}

func decTime(v []byte) time.Time {
	if len(v) != 8 {
		return time.Time{}
	}
	return time.Unix(int64(binary.BigEndian.Uint64(v)), 0)
}

// SetAccessTimes records last-access times in one batch; keys are store hashes or "nar/<object>".
// A time never moves backwards.
func (ix *Index) SetAccessTimes(times map[string]time.Time) error {
	wb := ix.db.NewWriteBatch()
	defer wb.Cancel()
	for k, t := range times {
		if err := wb.Set([]byte(prefixAccess+k), encTime(t)); err != nil {
			return fmt.Errorf("index access times: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("index access times: %w", err)
	}
	return nil
}

// AccessTimes calls fn for every recorded access time.
func (ix *Index) AccessTimes(fn func(key string, t time.Time)) error {
	return ix.iterate(prefixAccess, func(k string, v []byte) error { fn(k, decTime(v)); return nil })
}

// SetCreated records when the narinfo of hash was committed.
func (ix *Index) SetCreated(hash string, t time.Time) error {
	return ix.set(prefixCreated+hash, encTime(t))
}

// CreatedTimes calls fn for every narinfo's commit time.
func (ix *Index) CreatedTimes(fn func(hash string, t time.Time)) error {
	return ix.iterate(prefixCreated, func(k string, v []byte) error { fn(k, decTime(v)); return nil })
}

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

// ClearOrphaned forgets the orphan mark of a NAR object (a narinfo points at it again).
func (ix *Index) ClearOrphaned(name string) error { return ix.del(prefixOrphan + name) }

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
	return ix.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := string(item.Key()[len(prefix):])
			if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// Orphans calls fn for every NAR object marked orphaned.
func (ix *Index) Orphans(fn func(name string, since time.Time)) error {
	return ix.iterate(prefixOrphan, func(k string, v []byte) error { fn(k, decTime(v)); return nil })
}

// prefixRef keys record which narinfos name a NAR object: r/<nar object>\x00<store hash>.
// prefixReferrer keys record which narinfos reference a store path: R/<ref hash>\x00<hash>.
const (
	prefixRef      = "r/"
	prefixReferrer = "R/"
)

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
