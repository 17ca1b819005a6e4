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
	m := newMemo()
	m.maxBytes, m.maxMisses = 100, 3
	for i := 0; i < 50; i++ {
		_, _, gen := m.lookup("x")
		m.remember(fmt.Sprint("h", i), make([]byte, 10), gen)
		m.remember(fmt.Sprint("m", i), nil, gen)
	}
	if m.hitBytes > 100 || len(m.misses) > 3 {
		t.Fatalf("memo grew past its bounds: %d bytes, %d misses", m.hitBytes, len(m.misses))
	}
}
