package verify

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/dustin/go-humanize"
)

// held is what the backend holds.
type held struct {
	nars     map[string]backend.FileInfo
	staged   []backend.FileInfo
	narInfos map[string]bool // store hashes with a narinfo object
}

// served is what the index serves.
type served struct {
	named   map[string][]narRef // NAR object -> the narinfos naming it
	indexed map[string]bool
}

// run goes through the phases of a verification: list the backend, read the index, compare
// the two, check every NAR's presence and size, find orphans and leftovers, hash the sample and,
// with Quarantine, take what is bad out of service.
func (v *verifier) run(ctx context.Context) error {
	h, err := v.listBackend(ctx)
	if err != nil {
		return err
	}
	s, err := v.readIndex(ctx)
	if err != nil {
		return err
	}
	v.compareNarInfos(ctx, h, s)
	toHash := v.checkNars(ctx, h, s)
	v.findOrphans(h, s)
	v.findLeftovers(ctx)
	if err := v.hashSample(ctx, toHash, s); err != nil {
		return err
	}
	if !v.opts.Quarantine {
		return nil
	}
	return v.quarantine(ctx)
}

// listBackend lists what the backend holds.
func (v *verifier) listBackend(ctx context.Context) (held, error) {
	h := held{nars: map[string]backend.FileInfo{}, narInfos: map[string]bool{}}
	err := v.be.List(ctx, "", func(fi backend.FileInfo) error {
		switch {
		case strings.HasPrefix(fi.Name, "nar/"):
			h.nars[fi.Name] = fi
		case strings.HasPrefix(fi.Name, cache.StagingPrefix):
			h.staged = append(h.staged, fi)
		default:
			if hash, ok := strings.CutSuffix(fi.Name, ".narinfo"); ok && cache.ValidStoreHash(hash) {
				h.narInfos[hash] = true
			}
		}
		return nil
	})
	if err != nil {
		return h, fmt.Errorf("verify: list backend: %w", err)
	}
	v.rep.Nars = len(h.nars)
	v.printf("verify: %d NAR objects and %d narinfos in the backend", len(h.nars), len(h.narInfos))
	return h, nil
}

// readIndex reads what the index serves, checking each narinfo on its own.
func (v *verifier) readIndex(ctx context.Context) (served, error) {
	s := served{named: map[string][]narRef{}, indexed: map[string]bool{}}
	err := v.ix.NarInfos(func(hash string, text []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.indexed[hash] = true
		v.rep.NarInfos++
		if ni, ok := v.checkNarInfo(hash, text); ok {
			s.named[ni.URL] = append(s.named[ni.URL], narRef{hash: hash, storePath: ni.StorePath, fileSize: ni.FileSize})
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("verify: read index: %w", err)
	}
	v.printf("verify: %d narinfos in the index", v.rep.NarInfos)
	return s, nil
}

// compareNarInfos checks that index and backend agree on the narinfos. What changed since the
// listing is looked at again.
func (v *verifier) compareNarInfos(ctx context.Context, h held, s served) {
	for _, hash := range slices.Sorted(maps.Keys(h.narInfos)) {
		if s.indexed[hash] {
			continue
		}
		if ok, err := v.ix.HasNarInfo(hash); err != nil {
			v.failure("index lookup %s: %v", hash, err)
		} else if !ok {
			v.problem(&v.rep.NotIndexed, "not indexed %s.narinfo: in the backend but not in the index: run cached reindex", hash)
		}
	}
	for _, hash := range slices.Sorted(maps.Keys(s.indexed)) {
		if h.narInfos[hash] {
			continue
		}
		_, err := v.be.Stat(ctx, hash+".narinfo")
		if errors.Is(err, backend.ErrNotExist) {
			if ok, _ := v.ix.HasNarInfo(hash); ok {
				v.problem(&v.rep.BadNarInfos, "bad narinfo %s: served from the index but not in the backend: run cached reindex", hash)
			}
		} else if err != nil {
			v.failure("stat %s.narinfo: %v", hash, err)
		}
	}
}

// checkNars checks that every NAR a narinfo names is there, with the size the narinfos and the
// index say. It returns those that are, to hash.
func (v *verifier) checkNars(ctx context.Context, h held, s served) []string {
	var toHash []string
	for _, name := range slices.Sorted(maps.Keys(s.named)) {
		refs := s.named[name]
		fi, ok := h.nars[name]
		if !ok {
			var err error
			fi, err = v.be.Stat(ctx, name)
			if errors.Is(err, backend.ErrNotExist) {
				if ref, err := v.ix.NarReferenced(name); err == nil && !ref {
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
	return toHash
}

// findOrphans finds NARs no narinfo names, and staged uploads, past the grace period.
func (v *verifier) findOrphans(h held, s served) {
	for _, name := range slices.Sorted(maps.Keys(h.nars)) {
		if _, ok := s.named[name]; ok {
			continue
		}
		fi := h.nars[name]
		since := v.c.UnreferencedSince(fi)
		if time.Since(since) < v.opts.Grace {
			continue
		}
		if ref, err := v.ix.NarReferenced(name); err != nil || ref {
			continue // a narinfo committed since the scan names it
		}
		v.problem(&v.rep.Orphans, "orphan %s: no narinfo names it (since %s)", name, since.UTC().Format(time.RFC3339))
		v.orphans = append(v.orphans, fi)
	}
	slices.SortFunc(h.staged, func(a, b backend.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	for _, fi := range h.staged {
		if time.Since(fi.ModTime) >= v.opts.Grace {
			v.problem(&v.rep.Orphans, "orphan %s: staged upload left since %s", fi.Name, fi.ModTime.UTC().Format(time.RFC3339))
			v.orphans = append(v.orphans, fi)
		}
	}
}

// findLeftovers finds temporary files of writes that never finished (a crash): cached serve
// removes them when it starts; younger ones may be uploads in progress.
func (v *verifier) findLeftovers(ctx context.Context) {
	temps, ok := v.be.(backend.Temps)
	if !ok {
		return
	}
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

// hashSample reads back the sample of toHash, opts.Jobs at a time.
func (v *verifier) hashSample(ctx context.Context, toHash []string, s served) error {
	picked := sample(toHash, v.opts.Sample, v.opts.Seed)
	v.toHash = len(picked)
	v.printf("verify: hashing %d of the %d NARs named by narinfos", len(picked), len(toHash))
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(v.opts.Jobs, len(picked)) {
		wg.Go(func() {
			for name := range work {
				v.hashNar(ctx, name, s.named[name])
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
	return ctx.Err()
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
	nn, err := cache.ParseNarName(ni.URL)
	if err != nil {
		v.problem(&v.rep.BadNarInfos, "bad narinfo of %s: URL: %v", ni.StorePath, err)
		return nil, false
	}
	if comp := cache.NarInfoCompression(ni); comp != nn.Compression {
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
	if rec, err := v.ix.Nar(name); err == nil && rec.FileSize != uint64(size) {
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
	nn, err := cache.ParseNarName(name)
	if err != nil {
		return // checkNarInfo admitted only parsable names
	}
	obj, err := v.be.Open(ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		if ref, err := v.ix.NarReferenced(name); err == nil && ref {
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
	got, err := v.c.CheckNar(ctx, nn, obj)
	v.hashed(seen.Size)
	if err != nil {
		var ie *cache.InputError
		switch {
		case errors.As(err, &ie):
			v.corrupt(name, &seen, refs, err.Error())
		case ctx.Err() == nil:
			v.failure("read %s: %v", name, err)
		}
		return
	}
	if why := v.mismatch(name, got, refs); why != "" {
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
	if rec, err := v.ix.Nar(name); err == nil && rec != got {
		why = append(why, "the index recorded "+describeNar(rec))
	}
	for _, r := range refs {
		text, err := v.ix.NarInfo(r.hash)
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
