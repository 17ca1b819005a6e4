package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/signing"
)

// TestRecover: a server starting on a new index over a backend another one filled indexes what
// the backend holds, removes the partial uploads a dead process left, and marks the index in use
// until MarkClean; started again on that index after a crash (never marked clean), it reindexes.
func TestRecover(t *testing.T) {
	ctx := context.Background()
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first := newTestCacheOn(t, be, Options{})
	narBytes := testNar(t, "recover")
	file := compress(t, "zstd", narBytes)
	url := narName(file, "zstd")
	if _, err := first.PutNar(ctx, url, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	hash := strings.Repeat("b", 32)
	if _, err := first.PutNarInfo(ctx, hash, narInfoFor(t, hash, narBytes, file, url, "zstd")); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, StagingPrefix+"left-by-a-crash", strings.NewReader("partial")); err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	start := func() (*Cache, *index.Index) {
		ix, err := index.Open(dir, log)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := signing.Generate("test-1")
		c, err := New(ctx, be, ix, key, log, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Recover(ctx); err != nil {
			t.Fatalf("Recover: %v", err)
		}
		return c, ix
	}
	_, ix := start()
	if ok, err := ix.HasNarInfo(hash); !ok || err != nil {
		t.Errorf("after Recover on a new index: the backend's narinfo indexed %v, %v", ok, err)
	}
	if _, err := be.Stat(ctx, StagingPrefix+"left-by-a-crash"); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("the staged leftover after Recover: %v, want it removed", err)
	}
	if dirty, _ := ix.Dirty(); !dirty {
		t.Error("the index is not marked in use after Recover")
	}
	// A crash: the index is closed without MarkClean, and loses the narinfo's record.
	if err := ix.DeleteNarInfo(hash); err != nil {
		t.Fatal(err)
	}
	ix.Close()
	c, ix := start()
	if ok, err := ix.HasNarInfo(hash); !ok || err != nil {
		t.Errorf("after Recover on an index left in use: the narinfo indexed %v, %v; want it reindexed", ok, err)
	}
	if err := c.MarkClean(); err != nil {
		t.Fatal(err)
	}
	if dirty, _ := ix.Dirty(); dirty {
		t.Error("the index is still marked in use after MarkClean")
	}
	ix.Close()
}
