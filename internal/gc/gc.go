// Package gc decides which store paths a cache may drop and drops them without ever breaking a
// closure that stays: a path is removed only when no kept path references it, narinfos go
// before NARs, and a NAR goes only after it has had no narinfo for a grace period, so an upload
// racing a collection can only lose time, never data.
//
// It must never delete a NAR that a narinfo still names, nor a path that a kept path references.
package gc

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
)

// Policy says what to collect. Without ByAge or MaxSize nothing is collected.
type Policy struct {
	ByAge     bool          // apply OlderThan (which may be 0: everything unprotected)
	OlderThan time.Duration // collect paths not accessed (narinfo hit or download) for this long
	MaxSize   int64         // then collect least recently used paths until stored NARs fit
	KeepSince time.Duration // never collect a path uploaded less than this long ago
	Grace     time.Duration // a NAR outlives its last narinfo by this long
	DryRun    bool          // report, delete nothing
	// PulledOnly collects only paths pulled from an upstream (pull-through); an uploaded path
	// stays, and so does its closure, pulled paths included.
	PulledOnly bool
}

// Report is what a run did (or, dry, would do).
type Report struct {
	Paths        int   `json:"paths"`        // store paths before the run
	PathsDeleted int   `json:"pathsDeleted"` // narinfos removed
	NarsDeleted  int   `json:"narsDeleted"`  // NAR objects removed (grace period over)
	BytesFreed   int64 `json:"bytesFreed"`   // bytes of NAR objects removed
	BytesToFree  int64 `json:"bytesToFree"`  // bytes of NARs whose last narinfo went (freed after the grace period)
	Pinned       int   `json:"pinned"`       // paths kept because a pin's closure holds them
	SizeAfter    int64 `json:"sizeAfter"`    // bytes of NARs still named by narinfos
	Failures     int   `json:"failures"`
	DryRun       bool  `json:"dryRun"`
	// Error is why the run stopped early, if it did (set by whoever runs it; Run returns it).
	Error string `json:"error,omitempty"`
}

type path struct {
	hash       string
	storePath  string
	refs       []string // hashes of referenced paths (not itself)
	nar        string
	narSize    int64 // stored file size
	lastAccess time.Time
	created    time.Time
	pinned     bool
	pulled     bool // pulled from an upstream
	evict      bool
	referrers  int // kept paths that reference it
}

// Run collects garbage from c according to p, printing progress to out.
func Run(ctx context.Context, c *cache.Cache, ix *index.Index, p Policy, out io.Writer) (Report, error) {
	g := &collector{c: c, ix: ix, p: p, out: out, now: time.Now(), rep: Report{DryRun: p.DryRun}}
	err := g.run(ctx)
	return g.rep, err
}

// collector is one run of Run.
type collector struct {
	c     *cache.Cache
	ix    *index.Index
	p     Policy
	out   io.Writer
	now   time.Time
	rep   Report
	paths map[string]*path
}

// run goes through the phases of a collection: sync a replica's index, load the paths, decide
// what goes (pins, age, size), delete narinfos dependents first, then staged uploads and the
// NARs whose grace period is over.
func (g *collector) run(ctx context.Context) error {
	if err := g.c.FlushAccess(); err != nil {
		return err
	}
	if err := g.sync(ctx); err != nil {
		return err
	}
	paths, err := load(g.ix)
	if err != nil {
		return err
	}
	g.paths = paths
	g.rep.Paths = len(paths)
	fmt.Fprintf(g.out, "gc: %d store paths in the index\n", len(paths))

	g.plan()
	toFree := g.measure()
	if err := g.deleteNarInfos(ctx); err != nil {
		return err
	}
	if !g.p.DryRun {
		// Staged uploads of a process that died are never committed.
		if _, err := g.c.CleanStaging(ctx, g.p.Grace+time.Hour); err != nil {
			g.rep.Failures++
			fmt.Fprintf(g.out, "error cleaning staged uploads: %v\n", err)
		}
		if err := g.deleteNars(ctx, toFree); err != nil {
			return err
		}
	}
	rep := &g.rep
	fmt.Fprintf(g.out, "gc: %d of %d paths %s, %d NARs deleted, %d bytes freed, %d bytes more after the %s grace period, %d bytes kept, %d failures\n",
		rep.PathsDeleted, rep.Paths, map[bool]string{true: "would be deleted", false: "deleted"}[g.p.DryRun],
		rep.NarsDeleted, rep.BytesFreed, rep.BytesToFree, g.p.Grace, rep.SizeAfter, rep.Failures)
	if rep.Failures > 0 {
		return fmt.Errorf("gc: %d failures", rep.Failures)
	}
	return nil
}

// sync brings a replica's index up to date with the backend. A narinfo committed through
// another server, which may reference a path collected here, reaches this index only at its
// next sync. Sync now, so that only what is committed elsewhere during this run can be missed.
func (g *collector) sync(ctx context.Context) error {
	if !g.c.SharesBackend() {
		return nil
	}
	st, err := g.c.Reindex(ctx, false, nil)
	if err != nil {
		return fmt.Errorf("syncing with the backend before collecting: %w", err)
	}
	fmt.Fprintf(g.out, "gc: synced with the backend: %d narinfos added, %d removed\n", st.NarInfos, st.Removed)
	return nil
}

func (g *collector) protected(pt *path) bool {
	p := g.p
	return pt.pinned || (p.KeepSince > 0 && g.now.Sub(pt.created) < p.KeepSince) || (p.PulledOnly && !pt.pulled)
}

// plan marks the paths to evict: pins hold their closures, then age, then size.
func (g *collector) plan() {
	paths, p := g.paths, g.p
	// Pins hold their whole closure.
	var pinRoots []*path
	for _, pt := range paths {
		if pt.pinned {
			pinRoots = append(pinRoots, pt)
		}
	}
	for h := range closure(paths, pinRoots) {
		paths[h].pinned = true
		g.rep.Pinned++
	}

	// Age: every unprotected path not accessed within OlderThan is a candidate; the closures
	// of the others stay.
	if p.ByAge {
		var keep []*path
		for _, pt := range paths {
			if g.protected(pt) || g.now.Sub(pt.lastAccess) < p.OlderThan {
				keep = append(keep, pt)
			} else {
				pt.evict = true
			}
		}
		for h := range closure(paths, keep) {
			paths[h].evict = false
		}
	}

	// Size: evict least recently used paths that nothing kept references, until under MaxSize.
	if p.MaxSize > 0 {
		evictToSize(paths, p.MaxSize, g.protected)
	}
}

// measure counts what stays and what goes, each NAR once however many narinfos share it, and
// returns the NARs the plan leaves without a narinfo, with their sizes.
func (g *collector) measure() map[string]int64 {
	keptNars := map[string]bool{}
	for _, pt := range g.paths {
		if !pt.evict {
			keptNars[pt.nar] = true
		}
	}
	narSize := map[string]int64{}
	for _, pt := range g.paths {
		narSize[pt.nar] = pt.narSize
	}
	toFree := map[string]int64{}
	for n, sz := range narSize {
		if keptNars[n] {
			g.rep.SizeAfter += sz
		} else {
			g.rep.BytesToFree += sz
			toFree[n] = sz
		}
	}
	return toFree
}

// deleteNarInfos deletes the narinfos of the paths to evict (or, dry, says it would).
func (g *collector) deleteNarInfos(ctx context.Context) error {
	paths, out := g.paths, g.out
	var victims []*path
	for _, pt := range paths {
		if pt.evict {
			victims = append(victims, pt)
		}
	}
	// Dependents before dependencies, so that a failure part-way never leaves a kept narinfo
	// whose references are gone.
	sort.Slice(victims, func(i, j int) bool {
		return victims[i].referrers > victims[j].referrers || (victims[i].referrers == victims[j].referrers && victims[i].hash < victims[j].hash)
	})
	order := dependentsFirst(paths, victims)
	failed := map[string]bool{}
	for _, pt := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		if g.p.DryRun {
			fmt.Fprintf(out, "would delete %s (%d bytes, last access %s)\n", pt.storePath, pt.narSize, pt.lastAccess.Format(time.RFC3339))
			g.rep.PathsDeleted++
			continue
		}
		if failed[pt.hash] {
			// A path that references this one could not be deleted: keep it.
			markFailed(paths, pt, failed)
			continue
		}
		err := g.c.DeleteNarInfo(ctx, pt.hash)
		if errors.Is(err, cache.ErrReferenced) {
			// An upload that began after this collection references it: it stays.
			fmt.Fprintf(out, "keeping %s: %v\n", pt.storePath, err)
			markFailed(paths, pt, failed)
			continue
		}
		if err != nil && !errors.Is(err, index.ErrNotFound) {
			g.rep.Failures++
			fmt.Fprintf(out, "error deleting %s: %v\n", pt.storePath, err)
			// A failed delete must not strand what it references.
			markFailed(paths, pt, failed)
			continue
		}
		g.rep.PathsDeleted++
		fmt.Fprintf(out, "deleted %s\n", pt.storePath)
	}
	return nil
}

// deleteNars marks the unreferenced NARs (including uploads whose narinfo never came), then
// deletes those whose grace period is over. toFree are the NARs this run left without a narinfo.
func (g *collector) deleteNars(ctx context.Context, toFree map[string]int64) error {
	rep, out := &g.rep, g.out
	if _, err := g.c.MarkUnreferencedNars(ctx); err != nil {
		rep.Failures++
		fmt.Fprintf(out, "error listing NARs: %v\n", err)
	}
	var orphans []string
	if err := g.ix.Orphans(func(name string, _ time.Time) { orphans = append(orphans, name) }); err != nil {
		return err
	}
	for _, name := range orphans {
		deleted, size, err := g.c.DeleteNarIfOrphaned(ctx, name, g.p.Grace)
		if err != nil {
			rep.Failures++
			fmt.Fprintf(out, "error deleting %s: %v\n", name, err)
			continue
		}
		if deleted {
			rep.NarsDeleted++
			rep.BytesFreed += size
			// Freed now rather than after the grace period (--grace 0); NARs left by
			// earlier runs were never counted here.
			rep.BytesToFree -= toFree[name]
			fmt.Fprintf(out, "deleted %s (%d bytes)\n", name, size)
		}
	}
	return nil
}

// markFailed keeps pt's closure: it stays, so everything it references must too.
func markFailed(paths map[string]*path, pt *path, failed map[string]bool) {
	for h := range closure(paths, []*path{pt}) {
		failed[h] = true
	}
}

// load reads every narinfo with its times, pins and pulled marks.
func load(ix *index.Index) (map[string]*path, error) {
	paths := map[string]*path{}
	err := ix.NarInfos(func(hash string, text []byte) error {
		ni, err := narinfo.Parse(text)
		if err != nil {
			return fmt.Errorf("indexed narinfo %s: %w", hash, err)
		}
		pt := &path{hash: hash, storePath: ni.StorePath, nar: ni.URL, narSize: int64(ni.FileSize)}
		for _, r := range ni.References {
			if rh, _, err := narinfo.ParseBaseName(r); err == nil && rh != hash {
				pt.refs = append(pt.refs, rh)
			}
		}
		paths[hash] = pt
		return nil
	})
	if err != nil {
		return nil, err
	}
	narAccess := map[string]time.Time{}
	err = ix.AccessTimes(func(key string, t time.Time) {
		if strings.HasPrefix(key, "nar/") {
			narAccess[key] = t
		} else if pt := paths[key]; pt != nil && t.After(pt.lastAccess) {
			pt.lastAccess = t
		}
	})
	if err != nil {
		return nil, err
	}
	if err := ix.CreatedTimes(func(hash string, t time.Time) {
		if pt := paths[hash]; pt != nil {
			pt.created = t
		}
	}); err != nil {
		return nil, err
	}
	if err := ix.Pulled(func(key string, _ time.Time) {
		if pt := paths[key]; pt != nil {
			pt.pulled = true
		}
	}); err != nil {
		return nil, err
	}
	var namePins []string
	if err := ix.Pins(func(key string, _ time.Time) {
		if prefix, ok := strings.CutPrefix(key, "name:"); ok {
			namePins = append(namePins, prefix)
		} else if pt := paths[key]; pt != nil {
			pt.pinned = true
		}
	}); err != nil {
		return nil, err
	}
	for _, pt := range paths {
		name := pt.storePath[strings.LastIndexByte(pt.storePath, '/')+1+33:]
		for _, prefix := range namePins {
			if strings.HasPrefix(name, prefix) {
				pt.pinned = true
			}
		}
	}
	for _, pt := range paths {
		if t := narAccess[pt.nar]; t.After(pt.lastAccess) {
			pt.lastAccess = t
		}
		// A path never accessed since it was committed counts from its upload.
		if pt.lastAccess.Before(pt.created) {
			pt.lastAccess = pt.created
		}
	}
	return paths, nil
}

// closure returns the hashes reachable from roots (roots included), following references to
// paths the cache has.
func closure(paths map[string]*path, roots []*path) map[string]bool {
	seen := map[string]bool{}
	stack := make([]string, 0, len(roots))
	for _, r := range roots {
		stack = append(stack, r.hash)
	}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[h] {
			continue
		}
		pt := paths[h]
		if pt == nil {
			continue
		}
		seen[h] = true
		stack = append(stack, pt.refs...)
	}
	return seen
}

// evictToSize marks least recently used paths for eviction until the NARs still named fit in
// max. A path is eligible only when no remaining path references it, so closures are removed
// from the top down.
func evictToSize(paths map[string]*path, max int64, protected func(*path) bool) {
	narUsers := map[string]int{}
	narSize := map[string]int64{}
	for _, pt := range paths {
		pt.referrers = 0
	}
	for _, pt := range paths {
		if pt.evict {
			continue
		}
		narUsers[pt.nar]++
		narSize[pt.nar] = pt.narSize
		for _, r := range pt.refs {
			if rp := paths[r]; rp != nil {
				rp.referrers++
			}
		}
	}
	var total int64
	for n, sz := range narSize {
		if narUsers[n] > 0 {
			total += sz
		}
	}
	h := &lru{}
	for _, pt := range paths {
		if !pt.evict && pt.referrers == 0 && !protected(pt) {
			heap.Push(h, pt)
		}
	}
	for total > max && h.Len() > 0 {
		pt := heap.Pop(h).(*path)
		pt.evict = true
		narUsers[pt.nar]--
		if narUsers[pt.nar] == 0 {
			total -= narSize[pt.nar]
		}
		for _, r := range pt.refs {
			rp := paths[r]
			if rp == nil || rp.evict {
				continue
			}
			rp.referrers--
			if rp.referrers == 0 && !protected(rp) {
				heap.Push(h, rp)
			}
		}
	}
}

// dependentsFirst orders victims so that every path comes before the paths it references.
func dependentsFirst(paths map[string]*path, victims []*path) []*path {
	in := make(map[string]bool, len(victims))
	roots := make([]string, len(victims))
	for i, v := range victims {
		in[v.hash] = true
		roots[i] = v.hash
	}
	referrers := map[string][]string{} // among the victims
	for _, v := range victims {
		for _, r := range v.refs {
			if in[r] {
				referrers[r] = append(referrers[r], v.hash)
			}
		}
	}
	order, _ := cache.DependentsFirst(roots, func(h string) ([]string, error) { return referrers[h], nil })
	out := make([]*path, len(order))
	for i, h := range order {
		out[i] = paths[h]
	}
	return out
}

// lru is a min-heap of paths by last access.
type lru []*path

func (l lru) Len() int           { return len(l) }
func (l lru) Less(i, j int) bool { return l[i].lastAccess.Before(l[j].lastAccess) }
func (l lru) Swap(i, j int)      { l[i], l[j] = l[j], l[i] }
func (l *lru) Push(x any)        { *l = append(*l, x.(*path)) }
func (l *lru) Pop() any          { old := *l; x := old[len(old)-1]; *l = old[:len(old)-1]; return x }
