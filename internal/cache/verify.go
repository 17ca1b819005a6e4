package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/dustin/go-humanize"
)

// Verification reads the cache back and checks it against what it claims: the index and the
// backend agree, every NAR a narinfo names is there and still is what was verified when it was
// uploaded (read back through the same streaming check as an upload, never held in memory), the
// server signed every narinfo, and nothing lies around that no narinfo names.
//
// Quarantine takes a bad NAR out of service in an order that keeps garbage collection's
// invariants: its index record goes first (a narinfo naming it is then verified against the
// backend, and refused), then the narinfos that name it, dependents first and through
// DeleteNarInfo, so that no narinfo is left referencing a deleted one; last, under its NAR lock,
// the object moves to quarantine/<name>, unless a fresh upload replaced it in the meantime.

// QuarantinePrefix is where quarantined objects are moved, under their original name.
const QuarantinePrefix = "quarantine/"

// VerifyOptions say how much of the cache Verify reads back and what it does about problems.
type VerifyOptions struct {
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

// VerifyReport counts what Verify found and did.
type VerifyReport struct {
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

func (r *VerifyReport) total() int {
	return r.Corrupt + r.Missing + r.BadNarInfos + r.NotIndexed + r.Unsigned + r.Orphans + r.Leftovers
}

// progressEvery is how often hashing reports how far it got.
const progressEvery = 10 * time.Second

// Verify checks the cache and writes one line per problem, per quarantine action and per
// progress step to out. It returns an error only when it could not go on (the backend cannot be
// listed, the index cannot be read, ctx ended); problems are in the report.
func (c *Cache) Verify(ctx context.Context, opts VerifyOptions, out io.Writer) (VerifyReport, error) {
	if !(opts.Sample > 0 && opts.Sample <= 1) {
		return VerifyReport{}, fmt.Errorf("verify: sample %v: want a fraction 0 < f <= 1", opts.Sample)
	}
	if opts.Grace < 0 {
		return VerifyReport{}, fmt.Errorf("verify: grace %s is negative", opts.Grace)
	}
	opts.Jobs = max(opts.Jobs, 1)
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64()
	}
	v := &verifier{c: c, opts: opts, pub: c.PublicKey(), out: out, lastProgress: time.Now()}
	v.rep.Sample = opts.Sample
	err := v.run(ctx)
	v.rep.Problems = v.rep.total()
	v.summarise()
	return v.rep, err
}

type verifier struct {
	c    *Cache
	opts VerifyOptions
	pub  signing.PublicKey

	mu           sync.Mutex // guards what follows: hashing runs in parallel
	out          io.Writer
	rep          VerifyReport
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

func (v *verifier) printf(format string, a ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintf(v.out, format+"\n", a...)
}

// problem counts one problem of a kind and prints it.
func (v *verifier) problem(kind *int, format string, a ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	*kind++
	fmt.Fprintf(v.out, format+"\n", a...)
}

func (v *verifier) failure(format string, a ...any) {
	v.problem(&v.rep.Failures, "failed: "+format, a...)
}

func (v *verifier) run(ctx context.Context) error {
	// What the backend holds.
	nars := map[string]backend.FileInfo{}
	var staged []backend.FileInfo
	inBackend := map[string]bool{} // store hashes with a narinfo object
	err := v.c.backend.List(ctx, "", func(fi backend.FileInfo) error {
		switch {
		case strings.HasPrefix(fi.Name, "nar/"):
			nars[fi.Name] = fi
		case strings.HasPrefix(fi.Name, StagingPrefix):
			staged = append(staged, fi)
		default:
			if hash, ok := strings.CutSuffix(fi.Name, ".narinfo"); ok && ValidStoreHash(hash) {
				inBackend[hash] = true
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify: list backend: %w", err)
	}
	v.rep.Nars = len(nars)
	v.printf("verify: %d NAR objects and %d narinfos in the backend", len(nars), len(inBackend))

	// What the index serves.
	named := map[string][]narRef{} // NAR object -> the narinfos naming it
	indexed := map[string]bool{}
	err = v.c.index.NarInfos(func(hash string, text []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		indexed[hash] = true
		v.rep.NarInfos++
		if ni, ok := v.checkNarInfo(hash, text); ok {
			named[ni.URL] = append(named[ni.URL], narRef{hash: hash, storePath: ni.StorePath, fileSize: ni.FileSize})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify: read index: %w", err)
	}
	v.printf("verify: %d narinfos in the index", v.rep.NarInfos)

	// Index and backend agree on the narinfos. What changed since the listing is looked at again.
	for _, hash := range slices.Sorted(maps.Keys(inBackend)) {
		if indexed[hash] {
			continue
		}
		if ok, err := v.c.index.HasNarInfo(hash); err != nil {
			v.failure("index lookup %s: %v", hash, err)
		} else if !ok {
			v.problem(&v.rep.NotIndexed, "not indexed %s.narinfo: in the backend but not in the index: run cached reindex", hash)
		}
	}
	for _, hash := range slices.Sorted(maps.Keys(indexed)) {
		if inBackend[hash] {
			continue
		}
		_, err := v.c.backend.Stat(ctx, hash+".narinfo")
		if errors.Is(err, backend.ErrNotExist) {
			if ok, _ := v.c.index.HasNarInfo(hash); ok {
				v.problem(&v.rep.BadNarInfos, "bad narinfo %s: served from the index but not in the backend: run cached reindex", hash)
			}
		} else if err != nil {
			v.failure("stat %s.narinfo: %v", hash, err)
		}
	}

	// Every NAR a narinfo names is there, with the size the narinfos and the index say.
	var toHash []string
	for _, name := range slices.Sorted(maps.Keys(named)) {
		refs := named[name]
		fi, ok := nars[name]
		if !ok {
			fi, err = v.c.backend.Stat(ctx, name)
			if errors.Is(err, backend.ErrNotExist) {
				if ref, err := v.c.index.NarReferenced(name); err == nil && !ref {
					continue // its narinfos went since the scan
				}
				v.problem(&v.rep.Missing, "missing %s: named by %s", name, storePaths(refs))
				v.bad = append(v.bad, badNar{name: name, refs: refs})
				continue
			}
			if err != nil {
				v.failure("stat %s: %v", name, err)
				continue
			}
		}
		if why := v.sizeMismatch(name, fi.Size, refs); why != "" {
			v.corrupt(name, &fi, refs, why)
			continue
		}
		toHash = append(toHash, name)
	}

	// Orphans: NARs no narinfo names, and staged uploads, past the grace period.
	for _, name := range slices.Sorted(maps.Keys(nars)) {
		if _, ok := named[name]; ok {
			continue
		}
		fi := nars[name]
		since := v.c.unreferencedSince(fi)
		if time.Since(since) < v.opts.Grace {
			continue
		}
		if ref, err := v.c.index.NarReferenced(name); err != nil || ref {
			continue // a narinfo committed since the scan names it
		}
		v.problem(&v.rep.Orphans, "orphan %s: no narinfo names it (since %s)", name, since.UTC().Format(time.RFC3339))
		v.orphans = append(v.orphans, fi)
	}
	slices.SortFunc(staged, func(a, b backend.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	for _, fi := range staged {
		if time.Since(fi.ModTime) >= v.opts.Grace {
			v.problem(&v.rep.Orphans, "orphan %s: staged upload left since %s", fi.Name, fi.ModTime.UTC().Format(time.RFC3339))
			v.orphans = append(v.orphans, fi)
		}
	}

	// Temporary files of writes that never finished (a crash): cached serve removes them when
	// it starts; younger ones may be uploads in progress.
	if temps, ok := v.c.backend.(backend.Temps); ok {
		files, err := temps.Temps(ctx)
		if err != nil {
			v.failure("listing temporary files: %v", err)
		}
		slices.SortFunc(files, func(a, b backend.FileInfo) int { return strings.Compare(a.Name, b.Name) })
		for _, fi := range files {
			if time.Since(fi.ModTime) >= v.opts.Grace {
				v.problem(&v.rep.Leftovers, "leftover %s: a partial write (%s) left since %s; cached serve removes it when it starts", fi.Name, humanize.IBytes(uint64(fi.Size)), fi.ModTime.UTC().Format(time.RFC3339))
			}
		}
	}

	// Read back the sample.
	picked := sample(toHash, v.opts.Sample, v.opts.Seed)
	v.toHash = len(picked)
	v.printf("verify: hashing %d of the %d NARs named by narinfos", len(picked), len(toHash))
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(v.opts.Jobs, len(picked)) {
		wg.Go(func() {
			for name := range work {
				v.hashNar(ctx, name, named[name])
			}
		})
	}
feed:
	for _, name := range picked {
		select {
		case work <- name:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}

	if !v.opts.Quarantine {
		return nil
	}
	slices.SortFunc(v.bad, func(a, b badNar) int { return strings.Compare(a.name, b.name) })
	for _, b := range v.bad {
		if err := v.quarantineNar(ctx, b); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v.failure("quarantine %s: %v", b.name, err)
		}
	}
	for _, fi := range v.orphans {
		if err := v.quarantineOrphan(ctx, fi); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v.failure("quarantine %s: %v", fi.Name, err)
		}
	}
	return nil
}

// checkNarInfo checks one indexed narinfo on its own: it parses, names a NAR object it can be
// served from, and carries the server's signature. It returns the narinfo if it names a NAR.
func (v *verifier) checkNarInfo(hash string, text []byte) (*narinfo.NarInfo, bool) {
	ni, err := narinfo.Parse(text)
	if err != nil {
		v.problem(&v.rep.BadNarInfos, "bad narinfo %s: %v", hash, err)
		return nil, false
	}
	if ni.HashPart() != hash {
		v.problem(&v.rep.BadNarInfos, "bad narinfo %s: it is for %s", hash, ni.StorePath)
	}
	nn, err := ParseNarName(ni.URL)
	if err != nil {
		v.problem(&v.rep.BadNarInfos, "bad narinfo of %s: URL: %v", ni.StorePath, err)
		return nil, false
	}
	if comp := narInfoCompression(ni); comp != nn.Compression {
		v.problem(&v.rep.BadNarInfos, "bad narinfo of %s: Compression %q does not match the URL %s", ni.StorePath, ni.Compression, ni.URL)
	}
	fp := ni.Fingerprint()
	signed := false
	for _, s := range ni.Sigs {
		if v.pub.Verify(fp, s) {
			signed = true
			break
		}
	}
	if !signed {
		v.problem(&v.rep.Unsigned, "unsigned %s: no valid signature by %s", ni.StorePath, v.pub.Name)
	}
	return ni, true
}

// sizeMismatch says how the size of a NAR object differs from what its narinfos and its index
// record say, or "" if it does not.
func (v *verifier) sizeMismatch(name string, size int64, refs []narRef) string {
	var why []string
	for _, r := range refs {
		if r.fileSize != 0 && r.fileSize != uint64(size) {
			why = append(why, fmt.Sprintf("the narinfo of %s says FileSize %d", r.storePath, r.fileSize))
		}
	}
	if rec, err := v.c.index.Nar(name); err == nil && rec.FileSize != uint64(size) {
		why = append(why, fmt.Sprintf("the index recorded FileSize %d", rec.FileSize))
	}
	if len(why) == 0 {
		return ""
	}
	return fmt.Sprintf("it is %d bytes but %s", size, strings.Join(why, "; "))
}

// hashNar reads a NAR object back through the checks an upload passes and compares what it
// measured with its narinfos and its index record.
func (v *verifier) hashNar(ctx context.Context, name string, refs []narRef) {
	nn, err := ParseNarName(name)
	if err != nil {
		return // checkNarInfo admitted only parsable names
	}
	obj, err := v.c.backend.Open(ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		if ref, err := v.c.index.NarReferenced(name); err == nil && ref {
			v.mu.Lock()
			v.bad = append(v.bad, badNar{name: name, refs: refs})
			v.mu.Unlock()
			v.problem(&v.rep.Missing, "missing %s: named by %s", name, storePaths(refs))
		}
		return
	}
	if err != nil {
		v.failure("open %s: %v", name, err)
		return
	}
	defer obj.Close()
	seen := obj.Info()
	res, err := v.c.ingest(ctx, nn, nn.Compression, obj, nil, func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err })
	v.hashed(seen.Size)
	if err != nil {
		var ie *InputError
		switch {
		case errors.As(err, &ie):
			v.corrupt(name, &seen, refs, err.Error())
		case ctx.Err() == nil:
			v.failure("read %s: %v", name, err)
		}
		return
	}
	if why := v.mismatch(name, res.stored, refs); why != "" {
		v.corrupt(name, &seen, refs, why)
	}
}

func (v *verifier) hashed(size int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.NarsHashed++
	v.rep.BytesHashed += size
	if time.Since(v.lastProgress) >= progressEvery {
		v.lastProgress = time.Now()
		fmt.Fprintf(v.out, "verify: hashed %d of %d NARs (%s)\n", v.rep.NarsHashed, v.toHash, humanize.IBytes(uint64(v.rep.BytesHashed)))
	}
}

func (v *verifier) corrupt(name string, seen *backend.FileInfo, refs []narRef, why string) {
	v.mu.Lock()
	v.bad = append(v.bad, badNar{name: name, seen: seen, refs: refs})
	v.mu.Unlock()
	v.problem(&v.rep.Corrupt, "corrupt %s: %s (named by %s)", name, why, storePaths(refs))
}

// mismatch says how what a NAR object measured differs from its index record and the narinfos
// naming it, or "" if it does not.
func (v *verifier) mismatch(name string, got index.NarRecord, refs []narRef) string {
	var why []string
	if rec, err := v.c.index.Nar(name); err == nil && rec != got {
		why = append(why, "the index recorded "+describeNar(rec))
	}
	for _, r := range refs {
		text, err := v.c.index.NarInfo(r.hash)
		if err != nil {
			continue // deleted since the scan
		}
		ni, err := narinfo.Parse(text)
		if err != nil {
			continue // reported by the scan
		}
		var diffs []string
		if ni.NarHash.String() != got.NarHash {
			diffs = append(diffs, "NarHash "+ni.NarHash.String())
		}
		if ni.NarSize != got.NarSize {
			diffs = append(diffs, fmt.Sprintf("NarSize %d", ni.NarSize))
		}
		if !ni.FileHash.IsZero() && ni.FileHash.String() != got.FileHash {
			diffs = append(diffs, "FileHash "+ni.FileHash.String())
		}
		if ni.FileSize != 0 && ni.FileSize != got.FileSize {
			diffs = append(diffs, fmt.Sprintf("FileSize %d", ni.FileSize))
		}
		if len(diffs) > 0 {
			why = append(why, fmt.Sprintf("the narinfo of %s says %s", ni.StorePath, strings.Join(diffs, ", ")))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return fmt.Sprintf("it holds %s but %s", describeNar(got), strings.Join(why, "; "))
}

func describeNar(r index.NarRecord) string {
	return fmt.Sprintf("NarHash %s, NarSize %d, FileHash %s, FileSize %d", r.NarHash, r.NarSize, r.FileHash, r.FileSize)
}

func storePaths(refs []narRef) string {
	ps := make([]string, len(refs))
	for i, r := range refs {
		ps[i] = r.storePath
	}
	return strings.Join(ps, ", ")
}

func (v *verifier) summarise() {
	r := &v.rep
	var kinds []string
	for _, k := range []struct {
		n    int
		what string
	}{{r.Corrupt, "corrupt"}, {r.Missing, "missing"}, {r.BadNarInfos, "bad narinfos"}, {r.NotIndexed, "not indexed"}, {r.Unsigned, "unsigned"}, {r.Orphans, "orphans"}, {r.Leftovers, "leftovers"}} {
		if k.n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", k.n, k.what))
		}
	}
	found := "no problems"
	if r.Problems > 0 {
		found = fmt.Sprintf("%s (%s)", countOf(r.Problems, "problem"), strings.Join(kinds, ", "))
	}
	v.printf("verify: %d narinfos, %d NAR objects, %d hashed (%s): %s", r.NarInfos, r.Nars, r.NarsHashed, humanize.IBytes(uint64(r.BytesHashed)), found)
	if v.opts.Quarantine {
		v.printf("verify: %s quarantined under %s, %s deleted", countOf(r.Quarantined, "object"), QuarantinePrefix, countOf(r.NarInfosDeleted, "narinfo"))
	}
	if r.Failures > 0 {
		v.printf("verify: %s (checks or actions that could not be done)", countOf(r.Failures, "failure"))
	}
}

// countOf says "1 problem", "2 problems".
func countOf(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// sample returns the names to read back: all of them for fraction 1, otherwise
// ceil(fraction·len(names)) of them picked at random with seed, in sorted order. The same names,
// fraction and seed give the same sample.
func sample(names []string, fraction float64, seed uint64) []string {
	if fraction >= 1 {
		return names
	}
	picked := slices.Clone(names)
	slices.Sort(picked)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	rng.Shuffle(len(picked), func(i, j int) { picked[i], picked[j] = picked[j], picked[i] })
	picked = picked[:int(math.Ceil(fraction*float64(len(picked))))]
	slices.Sort(picked)
	return picked
}

// unreferencedSince is since when no narinfo has named a NAR object: its orphan mark when a
// narinfo naming it was deleted after it was written, else its modification time.
func (c *Cache) unreferencedSince(fi backend.FileInfo) time.Time {
	since := fi.ModTime
	if t, err := c.index.Orphaned(fi.Name); err == nil && t.After(since) {
		since = t
	}
	return since
}

// quarantineNar takes a corrupt or missing NAR out of service (see the top of this file).
func (v *verifier) quarantineNar(ctx context.Context, b badNar) error {
	unchanged, err := v.c.forgetNar(ctx, b.name, b.seen)
	if err != nil {
		return err
	}
	if !unchanged {
		v.printf("left %s: it was replaced since it was checked", b.name)
		return nil
	}
	what := "is corrupt"
	if b.seen == nil {
		what = "is missing"
	}
	roots := make([]string, len(b.refs))
	for i, r := range b.refs {
		roots[i] = r.hash
	}
	// Narinfos committed between the scan and forgetNar may name it too: look for them.
	for attempt := 0; ; attempt++ {
		if err := v.deleteNarInfos(ctx, roots, b.name, what); err != nil {
			return err
		}
		ref, err := v.c.index.NarReferenced(b.name)
		if err != nil {
			return err
		}
		if !ref {
			break
		}
		if attempt == 2 {
			return errors.New("narinfos naming it keep being committed")
		}
		if roots, err = v.c.narInfosNaming(b.name); err != nil {
			return err
		}
	}
	if b.seen == nil {
		return nil
	}
	moved, err := v.c.moveToQuarantine(ctx, b.name, func(fi backend.FileInfo) (bool, error) {
		if ref, err := v.c.index.NarReferenced(b.name); err != nil {
			return false, err
		} else if ref {
			return false, errors.New("a narinfo naming it was committed meanwhile")
		}
		return sameObject(fi, *b.seen), nil
	})
	if err != nil {
		return err
	}
	if moved {
		v.quarantined(b.name)
	} else {
		v.printf("left %s: it was replaced since it was checked", b.name)
	}
	return nil
}

func (v *verifier) quarantined(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.Quarantined++
	fmt.Fprintf(v.out, "quarantined %s -> %s%s\n", name, QuarantinePrefix, name)
}

// quarantineOrphan moves an orphaned NAR or staged upload under quarantine/ if it still is one.
func (v *verifier) quarantineOrphan(ctx context.Context, orphan backend.FileInfo) error {
	moved, err := v.c.moveToQuarantine(ctx, orphan.Name, func(fi backend.FileInfo) (bool, error) {
		if strings.HasPrefix(orphan.Name, StagingPrefix) {
			return time.Since(fi.ModTime) >= v.opts.Grace, nil
		}
		if ref, err := v.c.index.NarReferenced(orphan.Name); err != nil || ref {
			return false, err
		}
		return time.Since(v.c.unreferencedSince(fi)) >= v.opts.Grace, nil
	})
	if err != nil {
		return err
	}
	if moved {
		v.quarantined(orphan.Name)
	} else {
		v.printf("left %s: it is no longer an orphan", orphan.Name)
	}
	return nil
}

// deleteNarInfos deletes the narinfos of roots, whose NAR is corrupt or missing, and of every
// path that references one of them, directly or not, dependents first: a narinfo whose
// references are gone would break its closure (and DeleteNarInfo refuses to leave one). A
// referrer committed while this runs makes it start over.
func (v *verifier) deleteNarInfos(ctx context.Context, roots []string, nar, what string) error {
	isRoot := map[string]bool{}
	for _, h := range roots {
		isRoot[h] = true
	}
	for attempt := 0; ; attempt++ {
		order, err := DependentsFirst(roots, v.c.index.Referrers)
		if err != nil {
			return err
		}
		raced := false
		for _, h := range order {
			sp := v.c.storePathOf(h)
			err := v.c.DeleteNarInfo(ctx, h)
			switch {
			case err == nil:
				why := fmt.Sprintf("its NAR %s %s", nar, what)
				if !isRoot[h] {
					why = fmt.Sprintf("it depends on a path whose NAR %s %s", nar, what)
				}
				v.mu.Lock()
				v.rep.NarInfosDeleted++
				fmt.Fprintf(v.out, "deleted narinfo of %s: %s\n", sp, why)
				v.mu.Unlock()
			case errors.Is(err, index.ErrNotFound):
				// gone already
			case errors.Is(err, ErrReferenced) && attempt < 3:
				raced = true
			default:
				return fmt.Errorf("delete narinfo of %s: %w", sp, err)
			}
			if raced {
				break
			}
		}
		if !raced {
			return nil
		}
	}
}

// narInfosNaming returns the store hashes of the indexed narinfos that name a NAR object. It reads
// the whole index: only a race with an upload needs it.
func (c *Cache) narInfosNaming(name string) ([]string, error) {
	var out []string
	err := c.index.NarInfos(func(hash string, text []byte) error {
		if ni, err := narinfo.Parse(text); err == nil && ni.URL == name {
			out = append(out, hash)
		}
		return nil
	})
	return out, err
}

func (c *Cache) storePathOf(hash string) string {
	if text, err := c.index.NarInfo(hash); err == nil {
		if ni, err := narinfo.Parse(text); err == nil {
			return ni.StorePath
		}
	}
	return hash
}

// forgetNar drops the index's records of a NAR object (its record, NarHash entry, orphan mark and
// aliases) under its NAR lock, if the object is still the one that was checked (seen; nil for
// one that was missing). A narinfo naming it is then verified against the backend, and an upload
// of the same NAR is stored afresh instead of being deduplicated against it.
func (c *Cache) forgetNar(ctx context.Context, name string, seen *backend.FileInfo) (unchanged bool, err error) {
	mu := &c.narLocks[lockSlot(name)]
	mu.Lock()
	defer mu.Unlock()
	fi, err := c.backend.Stat(ctx, name)
	switch {
	case errors.Is(err, backend.ErrNotExist):
		if seen != nil {
			return false, nil // gone since it was checked (collected): nothing to forget
		}
	case err != nil:
		return false, err
	case seen == nil || !sameObject(fi, *seen):
		return false, nil
	}
	return true, c.forgetNarLocked(ctx, name)
}

// forgetNarLocked drops what the index knows of a NAR object, and its aliases. The caller holds
// its nar lock.
func (c *Cache) forgetNarLocked(ctx context.Context, name string) error {
	rec, _ := c.index.Nar(name)
	if err := c.index.ForgetNar(name, rec.NarHash); err != nil {
		return err
	}
	return c.forgetAliasesTo(ctx, name)
}

// moveToQuarantine moves an object to quarantine/<name> under its NAR lock, after forgetting what
// the index knows of it (index first, as deleteNar does), if still(its current info) says it
// should go.
func (c *Cache) moveToQuarantine(ctx context.Context, name string, still func(backend.FileInfo) (bool, error)) (bool, error) {
	mu := &c.narLocks[lockSlot(name)]
	mu.Lock()
	defer mu.Unlock()
	fi, err := c.backend.Stat(ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if ok, err := still(fi); err != nil || !ok {
		return false, err
	}
	if !strings.HasPrefix(name, StagingPrefix) {
		if err := c.forgetNarLocked(ctx, name); err != nil {
			return false, err
		}
	}
	if err := c.move(ctx, name, QuarantinePrefix+name); err != nil {
		return false, fmt.Errorf("move to %s: %w", QuarantinePrefix, err)
	}
	return true, nil
}

// sameObject reports whether two descriptions are of the same object version. Times are compared
// to the second: a listing and a stat may report them at different precisions.
func sameObject(a, b backend.FileInfo) bool {
	return a.Size == b.Size && a.ModTime.Truncate(time.Second).Equal(b.ModTime.Truncate(time.Second))
}
