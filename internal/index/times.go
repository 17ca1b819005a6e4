package index

// Times that garbage collection reads: last access (t/) and commit time (c/).

import (
	"encoding/binary"
	"fmt"
	"time"
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
