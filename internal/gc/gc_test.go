package gc

import (
	"sort"
	"testing"
	"time"
)

// mkPaths builds a graph: name -> references, with sizes and access ages in minutes.
func mkPaths(spec map[string]struct {
	refs []string
	size int64
	age  int
}) map[string]*path {
	now := time.Now()
	paths := map[string]*path{}
	for h, s := range spec {
		paths[h] = &path{hash: h, storePath: "/nix/store/" + h, refs: s.refs, nar: "nar/" + h, narSize: s.size,
			lastAccess: now.Add(-time.Duration(s.age) * time.Minute)}
	}
	return paths
}

func evicted(paths map[string]*path) []string {
	var out []string
	for h, p := range paths {
		if p.evict {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}

type spec = map[string]struct {
	refs []string
	size int64
	age  int
}

// A shared dependency stays while any kept path references it; whole closures go top down.
func TestEvictToSizeKeepsReferencedPaths(t *testing.T) {
	paths := mkPaths(spec{
		"old-top": {[]string{"shared", "old-dep"}, 100, 50},
		"old-dep": {nil, 100, 50},
		"shared":  {nil, 100, 60}, // oldest, but referenced by new-top
		"new-top": {[]string{"shared"}, 100, 1},
	})
	evictToSize(paths, 250, func(*path) bool { return false })
	if got := evicted(paths); len(got) != 2 || got[0] != "old-dep" || got[1] != "old-top" {
		t.Fatalf("evicted %v, want [old-dep old-top]", got)
	}
}

func TestEvictToSizeRespectsProtection(t *testing.T) {
	paths := mkPaths(spec{
		"a": {nil, 100, 50},
		"b": {nil, 100, 40},
	})
	evictToSize(paths, 50, func(p *path) bool { return p.hash == "a" })
	if got := evicted(paths); len(got) != 1 || got[0] != "b" {
		t.Fatalf("evicted %v, want [b] (a is protected)", got)
	}
}

func TestEvictToSizeCountsSharedNarsOnce(t *testing.T) {
	paths := mkPaths(spec{
		"a": {nil, 100, 50},
		"b": {nil, 100, 40},
	})
	paths["b"].nar = paths["a"].nar // one NAR, two narinfos: 100 bytes stored
	evictToSize(paths, 100, func(*path) bool { return false })
	if got := evicted(paths); len(got) != 0 {
		t.Fatalf("evicted %v although the shared NAR fits", got)
	}
}

func TestDependentsFirst(t *testing.T) {
	paths := mkPaths(spec{
		"top": {[]string{"mid"}, 1, 0},
		"mid": {[]string{"low"}, 1, 0},
		"low": {nil, 1, 0},
	})
	order := dependentsFirst(paths, []*path{paths["low"], paths["mid"], paths["top"]})
	var got []string
	for _, p := range order {
		got = append(got, p.hash)
	}
	if len(got) != 3 || got[0] != "top" || got[1] != "mid" || got[2] != "low" {
		t.Fatalf("order %v, want [top mid low]", got)
	}
}

func TestClosure(t *testing.T) {
	paths := mkPaths(spec{
		"top":    {[]string{"mid", "gone"}, 1, 0}, // "gone" is not in the cache
		"mid":    {[]string{"low"}, 1, 0},
		"low":    {nil, 1, 0},
		"single": {nil, 1, 0},
	})
	got := closure(paths, []*path{paths["top"]})
	if len(got) != 3 || !got["top"] || !got["mid"] || !got["low"] {
		t.Fatalf("closure %v", got)
	}
}
