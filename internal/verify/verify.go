// Package verify reads a cache back and checks it against what it claims: the index and the
// backend agree, every NAR a narinfo names is there and still is what was verified when it was
// uploaded (read back through the same streaming check as an upload, never held in memory), the
// server signed every narinfo, and nothing lies around that no narinfo names. With Quarantine it
// takes what is bad out of service.
//
// It is policy over the cache's exported operations (as gc is): the cache does each step under
// its locks, this package decides what to check, what to take out of service, in which order,
// and what to tell the operator. It must never delete a NAR: bad ones are moved under
// cache.QuarantinePrefix, and narinfos go only through Cache.DeleteNarInfo, dependents first.
//
// Quarantine takes a bad NAR out of service in an order that keeps garbage collection's
// invariants: its index record goes first (a narinfo naming it is then verified against the
// backend, and refused), then the narinfos that name it, dependents first and through
// DeleteNarInfo, so that no narinfo is left referencing a deleted one; last, under its NAR lock,
// the object moves to quarantine/<name>, unless a fresh upload replaced it in the meantime.
package verify

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/signing"
)

// Options say how much of the cache Run reads back and what it does about problems.
type Options struct {
	// Sample is the fraction of the NAR objects named by narinfos that are read back and hashed,
	// 0 < Sample <= 1. Every object's presence and size are checked whatever the sample.
	Sample float64
	// Seed picks the sample, so that a run can be repeated; 0 picks a random one.
	Seed uint64
	// Grace: a NAR that no narinfo names, or a staged upload, is an orphan only once it has been
	// so for this long; an upload whose narinfo has not arrived yet is not one.
	Grace time.Duration
	// Quarantine moves corrupt NARs and orphans under quarantine/, and deletes the narinfos that
	// name a corrupt or missing NAR together with those of the paths that depend on them.
	Quarantine bool
	// Jobs is how many NARs are hashed at once; 0 means 1.
	Jobs int
}

// Report counts what Run found and did.
type Report struct {
	NarInfos    int     `json:"narInfos"`    // narinfos in the index
	Nars        int     `json:"nars"`        // NAR objects in the backend
	NarsHashed  int     `json:"narsHashed"`  // NAR objects read back and hashed
	BytesHashed int64   `json:"bytesHashed"` // bytes of those objects
	Sample      float64 `json:"sample"`

	Problems    int `json:"problems"`    // the sum of the kinds below
	Corrupt     int `json:"corrupt"`     // NARs that fail verification or differ from their narinfos or index record
	Missing     int `json:"missing"`     // NARs named by a narinfo that the backend does not have
	BadNarInfos int `json:"badNarInfos"` // indexed narinfos that do not parse or are not in the backend
	NotIndexed  int `json:"notIndexed"`  // narinfos in the backend that the index does not have
	Unsigned    int `json:"unsigned"`    // narinfos without a valid signature by the server's key
	Orphans     int `json:"orphans"`     // NARs no narinfo names and staged uploads, past the grace period
	Leftovers   int `json:"leftovers"`   // temporary files of writes that never finished (disk), past the grace period

	Quarantined     int `json:"quarantined"`     // objects moved under quarantine/
	NarInfosDeleted int `json:"narInfosDeleted"` // narinfos deleted with a quarantined or missing NAR
	Failures        int `json:"failures"`        // checks or quarantines that could not be done
}

func (r *Report) total() int {
	return r.Corrupt + r.Missing + r.BadNarInfos + r.NotIndexed + r.Unsigned + r.Orphans + r.Leftovers
}

// progressEvery is how often hashing reports how far it got.
const progressEvery = 10 * time.Second

// Run checks c (whose index is ix) and writes one line per problem, per quarantine action and
// per progress step to out. It returns an error only when it could not go on (the backend cannot
// be listed, the index cannot be read, ctx ended); problems are in the report.
func Run(ctx context.Context, c *cache.Cache, ix *index.Index, opts Options, out io.Writer) (Report, error) {
	if !(opts.Sample > 0 && opts.Sample <= 1) {
		return Report{}, fmt.Errorf("verify: sample %v: want a fraction 0 < f <= 1", opts.Sample)
	}
	if opts.Grace < 0 {
		return Report{}, fmt.Errorf("verify: grace %s is negative", opts.Grace)
	}
	opts.Jobs = max(opts.Jobs, 1)
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64()
	}
	v := &verifier{c: c, ix: ix, be: c.Backend(), opts: opts, pub: c.PublicKey(), out: out, lastProgress: time.Now()}
	v.rep.Sample = opts.Sample
	err := v.run(ctx)
	v.rep.Problems = v.rep.total()
	v.summarise()
	return v.rep, err
}

type verifier struct {
	c    *cache.Cache
	ix   *index.Index
	be   backend.Backend
	opts Options
	pub  signing.PublicKey

	mu           sync.Mutex // guards what follows: hashing runs in parallel
	out          io.Writer
	rep          Report
	bad          []badNar           // corrupt and missing NARs, to quarantine
	orphans      []backend.FileInfo // orphaned NARs and staged uploads, to quarantine
	toHash       int
	lastProgress time.Time
}

// narRef is a narinfo naming a NAR object, as far as the size check needs it.
type narRef struct {
	hash      string
	storePath string
	fileSize  uint64 // 0 when the narinfo has no FileSize
}

// badNar is a NAR to take out of service.
type badNar struct {
	name string
	seen *backend.FileInfo // the object as checked; nil when it is missing
	refs []narRef
}
