package index

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
)

func openTest(t *testing.T) *Index {
	t.Helper()
	ix, err := Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix
}

// The in-memory layer never hides a write: a remembered miss or hit is replaced by what was
// written or deleted since.
func TestMemoFollowsWrites(t *testing.T) {
	ix := openTest(t)
	h := "0123456789abcdfghijklmnpqrsvwxyz"
	if _, err := ix.NarInfo(h); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fresh index: %v", err)
	}
	if err := ix.CommitNarInfo(h, []byte("one"), "nar/x", nil); err != nil {
		t.Fatal(err)
	}
	if v, err := ix.NarInfo(h); err != nil || string(v) != "one" {
		t.Fatalf("after commit: %q %v (a remembered miss hid the write)", v, err)
	}
	if err := ix.PutNarInfo(h, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if v, _ := ix.NarInfo(h); string(v) != "two" {
		t.Fatalf("after overwrite: %q", v)
	}
	if err := ix.RemoveNarInfo(h, "nar/x", nil); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ix.HasNarInfo(h); ok {
		t.Fatal("a remembered hit hid the removal")
	}
	ix.CommitNarInfo(h, []byte("three"), "nar/x", nil)
	if err := ix.Clear(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ix.HasNarInfo(h); ok {
		t.Fatal("Clear did not reach the memory layer")
	}
}

// Concurrent readers and writers: after the writers finish, every reader sees the final state.
func TestMemoConcurrent(t *testing.T) {
	ix := openTest(t)
	var wg sync.WaitGroup
	hashes := make([]string, 20)
	for i := range hashes {
		hashes[i] = fmt.Sprintf("%032d", i)
	}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 50; round++ {
				for _, h := range hashes {
					if round%2 == 0 {
						ix.CommitNarInfo(h, []byte(h), "nar/"+h, nil)
					} else {
						ix.RemoveNarInfo(h, "nar/"+h, nil)
					}
					ix.NarInfo(h)
				}
			}
		}()
	}
	wg.Wait()
	for _, h := range hashes {
		ix.CommitNarInfo(h, []byte("final"), "nar/"+h, nil)
	}
	for _, h := range hashes {
		if v, err := ix.NarInfo(h); err != nil || string(v) != "final" {
			t.Fatalf("%s: %q %v", h, v, err)
		}
	}
}

func TestMemoBounded(t *testing.T) {
	m := newMemoSized(memoShards*100, memoShards*3)
	for i := 0; i < 5000; i++ {
		h, miss := fmt.Sprint("h", i), fmt.Sprint("m", i)
		_, _, gen := m.lookup(h)
		m.remember(h, make([]byte, 10), gen)
		_, _, gen = m.lookup(miss)
		m.remember(miss, nil, gen)
	}
	hitBytes, misses := m.size()
	if hitBytes > memoShards*100 || misses > memoShards*3 {
		t.Fatalf("memo grew past its bounds: %d bytes, %d misses", hitBytes, misses)
	}
	if hitBytes == 0 || misses == 0 {
		t.Fatalf("memo remembers nothing: %d bytes, %d misses", hitBytes, misses)
	}
}

// DeleteAliasesTo removes exactly the aliases that resolve to the object, also after an alias
// was pointed elsewhere, and finds the aliases of an index written before the A/ keys existed.
func TestDeleteAliasesTo(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ix, err := Open(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	put := func(uploaded, stored string) {
		t.Helper()
		if err := ix.PutAlias(uploaded, AliasRecord{Stored: stored, FileSize: 1}); err != nil {
			t.Fatal(err)
		}
	}
	put("nar/a1.nar.xz", "nar/s1.nar.zst")
	put("nar/a2.nar.xz", "nar/s1.nar.zst")
	put("nar/a3.nar", "nar/s2.nar.zst")
	put("nar/a2.nar.xz", "nar/s2.nar.zst") // re-pointed: no longer an alias of s1
	check := func(stored string, want ...string) {
		t.Helper()
		got, err := ix.DeleteAliasesTo(stored)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("DeleteAliasesTo(%s) = %v, want %v", stored, got, want)
		}
		for _, u := range want {
			if _, err := ix.Alias(u); !errors.Is(err, ErrNotFound) {
				t.Fatalf("alias %s after DeleteAliasesTo: %v, want not found", u, err)
			}
		}
	}
	check("nar/s1.nar.zst", "nar/a1.nar.xz")
	if a, err := ix.Alias("nar/a2.nar.xz"); err != nil || a.Stored != "nar/s2.nar.zst" {
		t.Fatalf("alias a2 after deleting s1's: %+v, %v", a, err)
	}
	check("nar/s2.nar.zst", "nar/a2.nar.xz", "nar/a3.nar")
	check("nar/s2.nar.zst")

	// An index from before the A/ keys: only a/ keys, and no marker.
	put("nar/old.nar.xz", "nar/s3.nar.zst")
	if err := ix.del(prefixAliasTo + "nar/s3.nar.zst\x00nar/old.nar.xz"); err != nil {
		t.Fatal(err)
	}
	if err := ix.del(keyAliasTo); err != nil {
		t.Fatal(err)
	}
	ix.Close()
	if ix, err = Open(dir, log); err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	check("nar/s3.nar.zst", "nar/old.nar.xz")
}

// Deleting the aliases of one object visits that object's aliases only: a gc run that deletes
// every object of a cache with many aliases does work linear in the aliases, not their number
// times the objects' (the scan of all a/ keys it once was).
func TestDeleteAliasesToVisitsOnlyItsAliases(t *testing.T) {
	ix := openTest(t)
	const objects, perObject = 300, 3
	for o := 0; o < objects; o++ {
		for a := 0; a < perObject; a++ {
			rec := AliasRecord{Stored: fmt.Sprintf("nar/s%d.nar.zst", o), FileSize: 1}
			if err := ix.PutAlias(fmt.Sprintf("nar/u%d-%d.nar.xz", o, a), rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := ix.keysVisited.Load()
	for o := 0; o < objects; o++ {
		dead, err := ix.DeleteAliasesTo(fmt.Sprintf("nar/s%d.nar.zst", o))
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != perObject {
			t.Fatalf("object %d: %d aliases deleted, want %d: %v", o, len(dead), perObject, dead)
		}
	}
	if visited := ix.keysVisited.Load() - before; visited > objects*perObject {
		t.Fatalf("deleting the aliases of %d objects visited %d keys, want at most the %d aliases", objects, visited, objects*perObject)
	}
	left := 0
	if err := ix.iterate(prefixAlias, func(string, []byte) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d aliases left after deleting every object's", left)
	}
}
