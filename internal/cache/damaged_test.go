package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

// TestDamagedStreamsRefused: an upload whose compressed stream is cut or damaged after the NAR
// (its checksums, index or trailer) is refused, under every store policy, and leaves nothing
// behind. Stored as uploaded, such a file would be served, and nix could not unpack it.
func TestDamagedStreamsRefused(t *testing.T) {
	ctx := context.Background()
	xzNoIndex := func(b []byte) []byte { // whole blocks, then neither index nor footer
		footer := b[len(b)-12:]
		index := (int(footer[4]) | int(footer[5])<<8 | int(footer[6])<<16 | int(footer[7])<<24 + 1) * 4
		return b[:len(b)-12-index]
	}
	flipBefore := func(n int) func([]byte) []byte {
		return func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-n] ^= 0xff; return b }
	}
	cut := func(n int) func([]byte) []byte { return func(b []byte) []byte { return b[:len(b)-n] } }
	cases := []struct {
		name, comp string
		damage     func([]byte) []byte
	}{
		{"xz without index and footer", "xz", xzNoIndex},
		{"xz without footer", "xz", cut(12)},
		{"xz with a damaged index", "xz", flipBefore(13)},
		{"zstd without its checksum", "zstd", cut(4)},
		{"zstd with a wrong checksum", "zstd", flipBefore(1)},
		{"bzip2 cut short", "bzip2", cut(10)},
		{"br cut short", "br", cut(1)},
	}
	for _, policy := range []string{"as-uploaded", "xz", "zstd"} {
		for _, tc := range cases {
			t.Run(policy+"/"+tc.name, func(t *testing.T) {
				c, be := newTestCache(t, Options{StoreCompression: policy})
				file := tc.damage(compress(t, tc.comp, testNar(t, tc.name)))
				_, err := c.PutNar(ctx, narName(file, tc.comp), bytes.NewReader(file))
				var ie *InputError
				if !errors.As(err, &ie) {
					t.Fatalf("PutNar of a damaged upload: %v, want an InputError", err)
				}
				t.Logf("refused: %v", err)
				be.List(ctx, "", func(fi backend.FileInfo) error {
					if fi.Name != "nix-cache-info" {
						t.Errorf("left behind: %s", fi.Name)
					}
					return nil
				})
			})
		}
	}
}

// fullDisk is a backend whose Save of an upload fails part-way, as on a full disk (a fault a
// real disk cannot be made to produce in a test).
type fullDisk struct {
	*disk.Backend
	after int64 // bytes Save reads before failing
}

func (f fullDisk) Save(ctx context.Context, name string, r io.Reader) error {
	if !strings.HasPrefix(name, StagingPrefix) {
		return f.Backend.Save(ctx, name, r)
	}
	io.CopyN(io.Discard, r, f.after)
	return fmt.Errorf("write %s: %w", name, syscall.ENOSPC)
}

// TestStorageFailureIsNotTheUploads: when the storage fails while a valid NAR streams in, the
// error is the storage's (a 5xx, which nix retries, logged with its cause), not a 400 blaming the
// NAR, in every store policy.
func TestStorageFailureIsNotTheUploads(t *testing.T) {
	ctx := context.Background()
	for _, pc := range [][2]string{{"as-uploaded", "none"}, {"as-uploaded", "xz"}, {"zstd", "none"}, {"zstd", "zstd"}, {"xz", "zstd"}} {
		policy, comp := pc[0], pc[1]
		t.Run(policy+"/"+comp, func(t *testing.T) {
			be, err := disk.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			c := newTestCacheOn(t, fullDisk{be, 4096}, Options{StoreCompression: policy})
			file := compress(t, comp, testNar(t, "full disk"))
			_, err = c.PutNar(ctx, narName(file, comp), bytes.NewReader(file))
			var ie *InputError
			if errors.As(err, &ie) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("PutNar on a full disk: %v; want the storage's error, not an InputError", err)
			}
		})
	}
}

// TestReferencesByName: a reference must name a path the cache holds, name and all, and a
// reference to the path's own hash must be the path itself. Checking the hash alone would sign
// closures that nix then cannot substitute ("path ... is not valid").
func TestReferencesByName(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestCache(t, Options{})
	put := func(hash, name string, refs ...string) error {
		narBytes := testNar(t, hash+name)
		file := compress(t, "zstd", narBytes)
		url := narName(file, "zstd")
		if _, err := c.PutNar(ctx, url, bytes.NewReader(file)); err != nil {
			t.Fatalf("PutNar: %v", err)
		}
		ni, err := narinfo.Parse(narInfoFor(t, hash, narBytes, file, url, "zstd"))
		if err != nil {
			t.Fatal(err)
		}
		ni.StorePath = "/nix/store/" + hash + "-" + name
		ni.References = refs
		_, err = c.PutNarInfo(ctx, hash, ni.Bytes())
		return err
	}
	const dep, top = "0123456789abcdfghijklmnpqrsvwxyz", "zyxwvsrqpnmlkjihgfdcba9876543210"
	if err := put(dep, "dep"); err != nil {
		t.Fatal(err)
	}
	for _, refs := range [][]string{
		{dep + "-other"},                // the dependency's hash, another name
		{top + "-other", dep + "-dep"},  // this path's hash, another name
		{dep + "-dep", top + "-other2"}, // the same, second
	} {
		err := put(top, "top", refs...)
		var ie *InputError
		if !errors.As(err, &ie) || ie.Field != "References" {
			t.Errorf("references %v: %v, want a refusal naming References", refs, err)
		}
	}
	if err := put(top, "top", top+"-top", dep+"-dep"); err != nil {
		t.Fatalf("correct references refused: %v", err)
	}
}

// TestReuploadRestartsGrace: a NAR uploaded long ago whose narinfo never came, uploaded again
// (deduplicated onto the old object), gets a new grace period: a collection between the NAR
// PUT and the narinfo PUT keeps it, and the narinfo is then accepted.
func TestReuploadRestartsGrace(t *testing.T) {
	ctx := context.Background()
	c, be := newTestCache(t, Options{})
	narBytes := testNar(t, "reupload")
	file := compress(t, "zstd", narBytes)
	url := narName(file, "zstd")
	if _, err := c.PutNar(ctx, url, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	// Two hours ago, and never marked (no collection ran since, or a reindex cleared the marks).
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(be.Root(), url), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutNar(ctx, url, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MarkUnreferencedNars(ctx); err != nil {
		t.Fatal(err)
	}
	if deleted, _, err := c.DeleteNarIfOrphaned(ctx, url, time.Hour); err != nil || deleted {
		t.Fatalf("collection with a 1h grace period after the NAR was uploaded again: deleted=%v, %v", deleted, err)
	}
	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	if stored, err := c.PutNarInfo(ctx, hash, narInfoFor(t, hash, narBytes, file, url, "zstd")); err != nil || !stored {
		t.Fatalf("narinfo after the collection: stored=%v, %v", stored, err)
	}
}

// TestFlushAccessWaitsForTheFlusher: a flush returns only when every access recorded before it
// is in the index, including those in a batch the background flusher took and is still
// writing; otherwise gc, which flushes and then reads the times, could collect a path used
// seconds ago. The flusher runs flat out here so that the two flushes overlap.
func TestFlushAccessWaitsForTheFlusher(t *testing.T) {
	c, _ := newTestCache(t, Options{})
	ix := c.index
	ctx, cancel := context.WithCancel(context.Background())
	flusherDone := make(chan struct{})
	go func() {
		defer close(flusherDone)
		for ctx.Err() == nil {
			c.FlushAccess()
		}
	}()
	defer func() { cancel(); <-flusherDone }()
	missed := 0
	for i := range 300 {
		key := fmt.Sprintf("0123456789abcdfghijklmnpqrs%05d", i)
		c.Touch(key)
		if err := c.FlushAccess(); err != nil {
			t.Fatal(err)
		}
		found := false
		ix.AccessTimes(func(k string, _ time.Time) { found = found || k == key })
		if !found {
			missed++
		}
	}
	if missed > 0 {
		t.Errorf("%d of 300 accesses were not in the index when FlushAccess returned", missed)
	}
}

// indexDiesOnNarInfoSave is a backend that closes the index right after a narinfo is saved: the
// index failing between the save and the commit, a moment a real one cannot be made to fail at
// (the closed Badger database then fails for real).
type indexDiesOnNarInfoSave struct {
	backend.Backend
	ix interface{ Close() error }
}

func (b indexDiesOnNarInfoSave) Save(ctx context.Context, name string, r io.Reader) error {
	err := b.Backend.Save(ctx, name, r)
	if err == nil && strings.HasSuffix(name, ".narinfo") {
		b.ix.Close()
	}
	return err
}

// TestIndexFailureAfterNarInfoSaved: when the index fails after the narinfo was saved, the error
// says the narinfo was saved but not indexed (a *NotIndexedError naming it), not that nothing
// was stored; the narinfo is indeed in the backend.
func TestIndexFailureAfterNarInfoSaved(t *testing.T) {
	ctx := context.Background()
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ix, err := index.Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	key, _ := signing.Generate("test-1")
	c, err := New(ctx, indexDiesOnNarInfoSave{be, ix}, ix, key, log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	narBytes := testNar(t, "index dies")
	file := compress(t, "zstd", narBytes)
	url := narName(file, "zstd")
	if _, err := c.PutNar(ctx, url, bytes.NewReader(file)); err != nil {
		t.Fatalf("PutNar: %v", err)
	}
	hash := strings.Repeat("a", 32)
	_, err = c.PutNarInfo(ctx, hash, narInfoFor(t, hash, narBytes, file, url, "zstd"))
	var ni *NotIndexedError
	if !errors.As(err, &ni) || ni.Name != hash+".narinfo" {
		t.Fatalf("PutNarInfo with the index failing after the save: %v, want a NotIndexedError naming %s.narinfo", err, hash)
	}
	if _, err := be.Stat(ctx, hash+".narinfo"); err != nil {
		t.Errorf("the narinfo the error says was saved: %v", err)
	}
}
