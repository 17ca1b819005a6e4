// Package index is the Badger index of a cache: the signed narinfo of every served store path and
// a record per stored NAR, so that narinfo lookups (hits and the far more common misses) never
// touch the backend.
//
// The index is a cache of the backend, never the source of truth: everything in it can be rebuilt
// from the backend (see cache.Reindex). It must never hold something the backend does not.
package index

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
)

// ErrNotFound is returned (wrapped) for a key the index does not hold.
var ErrNotFound = errors.New("not in index")

// Keys. Store hashes are the 32 characters of nix32 before a store path's name; NAR objects are
// named as in a narinfo's URL ("nar/<nix32 FileHash>.nar.zst").
//
//	n/<store hash>                   narinfo text as served
//	r/<nar object>\x00<store hash>   the narinfo of store hash names the NAR object
//	R/<ref hash>\x00<store hash>     the narinfo of store hash references ref hash
//	f/<nar object>                   NarRecord JSON: what was verified about a stored NAR
//	h/<sha256:nix32 NarHash>         name of the object storing that NAR
//	a/<uploaded NAR name>            AliasRecord JSON
//	A/<stored NAR name>\x00<uploaded NAR name>  the aliases of an object
//	t/<store hash>                   last access of a narinfo (GET/HEAD hit), unix seconds
//	t/nar/<object>                   last download of a NAR object
//	c/<store hash>                   when the narinfo was committed
//	p/<store hash>, p/name:<prefix>  pinned: the closure is never collected
//	o/<nar object>                   since when no narinfo points at the NAR (gc grace period)
//	u/<store hash>, u/nar/<object>   pulled from an upstream (pull-through), and when
//	m/dirty, m/alias-to              state of the index itself
//	k/...                            records of other packages (kv.go)
const (
	prefixNarInfo  = "n/"
	prefixRef      = "r/"
	prefixReferrer = "R/"
	prefixNar      = "f/"
	prefixNarHash  = "h/"
	prefixAlias    = "a/"
	prefixAliasTo  = "A/"
	prefixAccess   = "t/"
	prefixCreated  = "c/"
	prefixPin      = "p/"
	prefixOrphan   = "o/"
	prefixPulled   = "u/"
	keyDirty       = "m/dirty"
	// keyAliasTo marks an index whose A/ keys are complete; one written before them gets them
	// on Open.
	keyAliasTo = "m/alias-to"
)

// Index wraps a Badger database.
type Index struct {
	db   *badger.DB
	memo *memo
	// keysVisited counts the keys that prefix scans went through (iterate, DeleteAliasesTo), so
	// that tests can tell a lookup from a scan by the work done rather than by the time taken.
	keysVisited atomic.Int64
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
