package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/journal"
	"github.com/cached-dev/cached/internal/narinfo"
)

// Replicas: several servers may share one backend (an S3 bucket), each with its own index.
// A path uploaded through another replica reaches this one's index three ways:
//   - the journal (FollowJournal): every replica publishes the narinfos it commits and deletes
//     under journal/ and follows the others', so that while it follows (the follower is
//     Current) a miss in the index is answered from the index, with no backend request;
//   - read-through, when there is no journal or it is not current: a narinfo miss in the index
//     looks in the backend, at most once per NegativeTTL for the same hash;
//   - the periodic sync (RunSync), a full listing, which also finds what was written to the
//     bucket by anything else than cached and what the journal missed.
// See the README for the bounds.

// negativeCache remembers recent backend misses so that the misses substituters send in bulk
// do not each cost a backend request.
type negativeCache struct {
	mu      sync.Mutex
	entries map[string]time.Time
}

const maxNegativeEntries = 1 << 20

func (n *negativeCache) fresh(hash string, ttl time.Duration) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.entries[hash]
	return ok && time.Since(t) < ttl
}

func (n *negativeCache) add(hash string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil || len(n.entries) >= maxNegativeEntries {
		n.entries = make(map[string]time.Time)
	}
	n.entries[hash] = time.Now()
}

func (n *negativeCache) remove(hash string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.entries, hash)
}

// readThrough looks for a narinfo the index lacks in the backend and indexes it. It returns
// ErrNotFound when the backend lacks it too, or at once while the journal is followed.
func (c *Cache) readThrough(ctx context.Context, hash string) error {
	if !c.opts.ReadThrough || c.journalCurrent() {
		return ErrNotFound
	}
	if c.negative.fresh(hash, c.opts.NegativeTTL) {
		return ErrNotFound
	}
	found, err := c.indexIfInBackend(ctx, hash)
	if err != nil {
		return err
	}
	if !found {
		c.negative.add(hash)
		return ErrNotFound
	}
	return nil
}

// indexIfInBackend indexes the narinfo of hash if the backend has it, and reports whether it did.
func (c *Cache) indexIfInBackend(ctx context.Context, hash string) (bool, error) {
	fi, err := c.backend.Stat(ctx, hash+".narinfo")
	if errors.Is(err, backend.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := c.indexFromBackend(ctx, hash, fi.ModTime); err != nil {
		if errors.Is(err, backend.ErrNotExist) {
			return false, nil // removed in between
		}
		return false, err
	}
	return true, nil
}

// RunSync brings the index in line with the backend every interval (new narinfos are read,
// deleted ones dropped) until ctx ends.
func (c *Cache) RunSync(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := c.Reindex(ctx, false, nil)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("sync with backend failed", "err", err)
			}
			continue
		}
		if st.NarInfos > 0 || st.Removed > 0 {
			c.log.Info("synced with backend", "added", st.NarInfos, "removed", st.Removed, "invalid", st.Invalid)
		}
	}
}

// replicaJournal is the journal this replica writes and follows, once FollowJournal started it.
type replicaJournal struct {
	p atomic.Pointer[journalState]
}

type journalState struct {
	w    *journal.Writer
	f    *journal.Follower
	done sync.WaitGroup // the writer, follower and expiry goroutines
}

// journalExpiry is how old journal objects get before they are removed: followers read only the
// last poll's worth plus journal.DefaultLookback, the rest is there for a person looking.
const journalExpiry = 10 * time.Minute

// WaitJournal waits, once the context given to FollowJournal has ended, until the journal's
// goroutines have: the writer has made its last flush of queued records (at most 5 s). Call it
// before the index closes; without FollowJournal it returns at once.
func (c *Cache) WaitJournal() {
	if js := c.journal.p.Load(); js != nil {
		js.done.Wait()
	}
}

// FollowJournal makes this replica publish the narinfos it commits and deletes in the backend's
// journal, and follow what the other replicas publish there, every interval, until ctx ends.
// The follower first syncs the index with a full listing; from its first successful poll after
// that until polls stop succeeding for journal.FollowerConfig.StaleAfter (three intervals), a
// narinfo missing from the index is answered ErrNotFound without asking the backend.
func (c *Cache) FollowJournal(ctx context.Context, every time.Duration) (*journal.Follower, error) {
	if !c.opts.ReadThrough {
		return nil, errors.New("a journal is for replicas sharing a backend (Options.ReadThrough)")
	}
	w, err := journal.NewWriter(c.backend, journal.NewWriterID(), c.log)
	if err != nil {
		return nil, err
	}
	f, err := journal.NewFollower(c.backend, journal.FollowerConfig{
		Self:  w.ID(),
		Every: every,
		Apply: c.applyJournal,
		Log:   c.log,
	})
	if err != nil {
		return nil, err
	}
	js := &journalState{w: w, f: f}
	if !c.journal.p.CompareAndSwap(nil, js) {
		return nil, errors.New("the journal is followed already")
	}
	js.done.Go(func() { w.Run(ctx, max(every/10, 10*time.Millisecond)) })
	js.done.Go(func() {
		f.Run(ctx, func(ctx context.Context) error {
			st, err := c.Reindex(ctx, false, nil)
			if err == nil && (st.NarInfos > 0 || st.Removed > 0) {
				c.log.Info("synced with backend", "added", st.NarInfos, "removed", st.Removed, "invalid", st.Invalid)
			}
			return err
		})
	})
	js.done.Go(func() { journal.RunExpiry(ctx, c.backend, time.Minute, journalExpiry, c.log) })
	return f, nil
}

// journalCurrent reports whether the index holds what every replica committed up to the last
// poll of the journal.
func (c *Cache) journalCurrent() bool {
	s := c.journal.p.Load()
	return s != nil && s.f.Current()
}

// publish tells the other replicas about a commit or deletion, if there is a journal.
func (c *Cache) publish(r journal.Record) {
	if s := c.journal.p.Load(); s != nil {
		s.w.Add(r)
	}
}

// applyJournal applies another replica's records (journal.FollowerConfig.Apply).
func (c *Cache) applyJournal(ctx context.Context, recs []journal.Record, written time.Time, late bool) error {
	for _, r := range recs {
		var err error
		switch r.Op {
		case journal.Put:
			err = c.applyPut(ctx, r, written, late)
		case journal.Delete:
			err = c.applyDelete(ctx, r.Hash)
		}
		if err != nil {
			return fmt.Errorf("%c %s: %w", r.Op, r.Hash, err)
		}
	}
	return nil
}

// applyPut indexes a narinfo another replica committed, from the record's text. A record that
// arrived after newer ones (late) may have been deleted since: the backend says.
func (c *Cache) applyPut(ctx context.Context, r journal.Record, written time.Time, late bool) error {
	mu := &c.commitLocks[lockSlot(r.Hash)]
	mu.Lock()
	defer mu.Unlock()
	if ok, err := c.index.HasNarInfo(r.Hash); err != nil || ok {
		return err
	}
	c.negative.remove(r.Hash)
	if late {
		_, err := c.indexIfInBackend(ctx, r.Hash)
		return err
	}
	ni, err := narinfo.Parse(r.NarInfo)
	if err != nil {
		c.log.Warn("journal: skipping a record whose narinfo does not parse", "hash", r.Hash, "err", err)
		return nil
	}
	err = c.indexNarInfo(r.Hash, r.NarInfo, ni, written)
	var ie *InputError
	if errors.As(err, &ie) {
		c.log.Warn("journal: skipping a record whose narinfo is not the path's", "hash", r.Hash, "err", err)
		return nil
	}
	return err
}

// applyDelete drops a narinfo another replica deleted, unless the backend has it again.
func (c *Cache) applyDelete(ctx context.Context, hash string) error {
	mu := &c.commitLocks[lockSlot(hash)]
	mu.Lock()
	defer mu.Unlock()
	if ok, err := c.index.HasNarInfo(hash); err != nil || !ok {
		return err
	}
	_, err := c.backend.Stat(ctx, hash+".narinfo")
	if err == nil {
		return nil // uploaded again since
	}
	if !errors.Is(err, backend.ErrNotExist) {
		return err
	}
	return c.forgetNarInfo(hash)
}
