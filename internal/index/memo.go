package index

import (
	"sync"
)

// memo keeps recently read narinfos, and recent misses, in memory in front of Badger: a
// substituter asks for the same narinfos (and far more missing ones) over and over, and both
// answers then cost a map lookup. Bounded: when a map is full it is dropped whole (cheap, and a
// cache that refills in a second of traffic needs no LRU bookkeeping on the hot path).
//
// Consistency: every write to a narinfo key invalidates it after the write and bumps gen; a
// reader records what it read only if gen did not move since before its read, so a stale answer
// can never be recorded over a newer write.
type memo struct {
	mu        sync.RWMutex
	gen       uint64
	hits      map[string][]byte
	hitBytes  int
	misses    map[string]struct{}
	maxBytes  int
	maxMisses int
}

const (
	defaultMemoBytes  = 32 << 20
	defaultMemoMisses = 100_000
)

func newMemo() *memo {
	return &memo{hits: map[string][]byte{}, misses: map[string]struct{}{}, maxBytes: defaultMemoBytes, maxMisses: defaultMemoMisses}
}

// lookup returns (text, true) for a remembered hit, (nil, true) for a remembered miss.
func (m *memo) lookup(hash string) ([]byte, bool, uint64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if v, ok := m.hits[hash]; ok {
		return v, true, m.gen
	}
	if _, ok := m.misses[hash]; ok {
		return nil, true, m.gen
	}
	return nil, false, m.gen
}

func (m *memo) remember(hash string, text []byte, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen != gen {
		return
	}
	if text == nil {
		if len(m.misses) >= m.maxMisses {
			m.misses = map[string]struct{}{}
		}
		m.misses[hash] = struct{}{}
		return
	}
	if m.hitBytes+len(text) > m.maxBytes {
		m.hits, m.hitBytes = map[string][]byte{}, 0
	}
	m.hits[hash] = text
	m.hitBytes += len(text)
}

// invalidate forgets hash ("" forgets everything) after a write.
func (m *memo) invalidate(hash string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	if hash == "" {
		m.hits, m.misses, m.hitBytes = map[string][]byte{}, map[string]struct{}{}, 0
		return
	}
	if v, ok := m.hits[hash]; ok {
		m.hitBytes -= len(v)
		delete(m.hits, hash)
	}
	delete(m.misses, hash)
}
