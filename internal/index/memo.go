package index

import (
	"hash/maphash"
	"sync"
)

// memo keeps recently read narinfos, and recent misses, in memory in front of Badger: a
// substituter asks for the same narinfos (and far more missing ones) over and over, and both
// answers then cost a map lookup. Bounded: when a shard's map is full it is dropped whole (cheap,
// and a cache that refills in a second of traffic needs no LRU bookkeeping on the hot path).
//
// It is split into shards by hash, each with its own lock: a lookup that Badger answers is
// remembered under a write lock, and with one lock every such lookup (all random misses) made the
// others wait.
//
// Consistency, per shard: every write to a narinfo key invalidates it after the write and bumps
// the shard's gen; a reader records what it read only if gen did not move since before its read,
// so a stale answer can never be recorded over a newer write.
type memo struct {
	seed   maphash.Seed
	shards [memoShards]memoShard
}

type memoShard struct {
	mu        sync.RWMutex
	gen       uint64
	hits      map[string][]byte
	hitBytes  int
	misses    map[string]struct{}
	maxBytes  int
	maxMisses int
	_         [40]byte // keep shards' locks on separate cache lines
}

const (
	memoShards        = 16
	defaultMemoBytes  = 32 << 20
	defaultMemoMisses = 100_000
)

func newMemo() *memo { return newMemoSized(defaultMemoBytes, defaultMemoMisses) }

// newMemoSized bounds the memo to about maxBytes of narinfo text and maxMisses misses in all.
func newMemoSized(maxBytes, maxMisses int) *memo {
	m := &memo{seed: maphash.MakeSeed()}
	for i := range m.shards {
		s := &m.shards[i]
		s.hits, s.misses = map[string][]byte{}, map[string]struct{}{}
		s.maxBytes, s.maxMisses = max(1, maxBytes/memoShards), max(1, maxMisses/memoShards)
	}
	return m
}

func (m *memo) shard(hash string) *memoShard {
	return &m.shards[maphash.String(m.seed, hash)%memoShards]
}

// lookup returns (text, true) for a remembered hit, (nil, true) for a remembered miss, and the
// generation to pass to remember.
func (m *memo) lookup(hash string) ([]byte, bool, uint64) {
	s := m.shard(hash)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if v, ok := s.hits[hash]; ok {
		return v, true, s.gen
	}
	if _, ok := s.misses[hash]; ok {
		return nil, true, s.gen
	}
	return nil, false, s.gen
}

func (m *memo) remember(hash string, text []byte, gen uint64) {
	s := m.shard(hash)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	if text == nil {
		if len(s.misses) >= s.maxMisses {
			s.misses = map[string]struct{}{}
		}
		s.misses[hash] = struct{}{}
		return
	}
	if s.hitBytes+len(text) > s.maxBytes {
		s.hits, s.hitBytes = map[string][]byte{}, 0
	}
	s.hits[hash] = text
	s.hitBytes += len(text)
}

// invalidate forgets hash ("" forgets everything) after a write.
func (m *memo) invalidate(hash string) {
	if hash == "" {
		for i := range m.shards {
			s := &m.shards[i]
			s.mu.Lock()
			s.gen++
			s.hits, s.misses, s.hitBytes = map[string][]byte{}, map[string]struct{}{}, 0
			s.mu.Unlock()
		}
		return
	}
	s := m.shard(hash)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	if v, ok := s.hits[hash]; ok {
		s.hitBytes -= len(v)
		delete(s.hits, hash)
	}
	delete(s.misses, hash)
}

// size returns the narinfo bytes and misses remembered, over all shards.
func (m *memo) size() (hitBytes, misses int) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		hitBytes += s.hitBytes
		misses += len(s.misses)
		s.mu.RUnlock()
	}
	return hitBytes, misses
}
