package gc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// runCache is a cache on a real disk backend and Badger index, storing NARs as uploaded.
func runCache(t *testing.T) (*cache.Cache, *index.Index) {
	t.Helper()
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return replica(t, be, false)
}

// replica is a cache with an index of its own on be; readThrough as for replicas on one bucket.
func replica(t *testing.T, be *disk.Backend, readThrough bool) (*cache.Cache, *index.Index) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ix, err := index.Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	key, _ := signing.Generate("test-1")
	c, err := cache.New(context.Background(), be, ix, key, log, cache.Options{StoreCompression: "as-uploaded", ReadThrough: readThrough})
	if err != nil {
		t.Fatal(err)
	}
	return c, ix
}

// twoReplicas are two caches on one disk backend, as replicas on one bucket: a with its index,
// and b.
func twoReplicas(t *testing.T) (*disk.Backend, *cache.Cache, *index.Index, *cache.Cache) {
	t.Helper()
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, ixA := replica(t, be, true)
	b, _ := replica(t, be, true)
	return be, a, ixA, b
}

// testPath is store path number i: a NAR of one file, uncompressed, and its narinfo.
type testPath struct {
	hash, narName string
	nar, info     []byte
}

func newPath(t *testing.T, i int, refs ...string) testPath {
	t.Helper()
	var buf bytes.Buffer
	w := nar.NewWriter(&buf)
	body := strings.Repeat(fmt.Sprintf("path %d ", i), 100+i)
	if err := w.File(false, int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := testPath{hash: fmt.Sprintf("0123456789abcdfghijklmnpqrsvw%03d", i), nar: buf.Bytes()}
	sum := sha256.Sum256(p.nar)
	p.narName = "nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"
	h := narinfo.Hash{Algo: "sha256", Digest: sum[:]}
	ni := narinfo.NarInfo{StorePath: "/nix/store/" + p.hash + "-test", URL: p.narName, Compression: "none",
		NarHash: h, NarSize: uint64(len(p.nar)), FileHash: h, FileSize: uint64(len(p.nar))}
	for _, r := range refs {
		ni.References = append(ni.References, r+"-test")
	}
	p.info = ni.Bytes()
	return p
}

func (p testPath) putNar(t *testing.T, c *cache.Cache) {
	t.Helper()
	if _, err := c.PutNar(context.Background(), p.narName, bytes.NewReader(p.nar)); err != nil {
		t.Fatal(err)
	}
}

func (p testPath) putInfo(t *testing.T, c *cache.Cache) {
	t.Helper()
	if stored, err := c.PutNarInfo(context.Background(), p.hash, p.info); err != nil || !stored {
		t.Fatalf("narinfo of %s: stored=%v, %v", p.hash, stored, err)
	}
}

// upload stores path number i and returns its hash, NAR name and NAR size.
func upload(t *testing.T, c *cache.Cache, i int) (hash, narName string, size int64) {
	t.Helper()
	p := newPath(t, i)
	p.putNar(t, c)
	p.putInfo(t, c)
	return p.hash, p.narName, int64(len(p.nar))
}

// TestBytesToFreeIsThisRunsNars: "bytes more after the grace period" counts the NARs this run
// leaves without a narinfo, whatever NARs of earlier runs it frees.
func TestBytesToFreeIsThisRunsNars(t *testing.T) {
	ctx := context.Background()
	c, ix := runCache(t)
	policy := Policy{ByAge: true, OlderThan: 30 * 24 * time.Hour, Grace: time.Hour}
	old := time.Now().Add(-40 * 24 * time.Hour)
	hash1, nar1, size1 := upload(t, c, 1)
	ix.SetCreated(hash1, old)
	rep, err := Run(ctx, c, ix, policy, io.Discard)
	if err != nil || rep.PathsDeleted != 1 || rep.NarsDeleted != 0 || rep.BytesToFree != size1 {
		t.Fatalf("run 1: %+v, %v; want path 1 deleted and its %d bytes to free", rep, err, size1)
	}
	// The grace period of path 1's NAR is over (its mark is moved back); path 2 is old now.
	ix.ClearOrphaned(nar1)
	ix.SetOrphaned(nar1, time.Now().Add(-2*time.Hour))
	hash2, _, size2 := upload(t, c, 2)
	ix.SetCreated(hash2, old)
	rep, err = Run(ctx, c, ix, policy, io.Discard)
	if err != nil || rep.PathsDeleted != 1 || rep.NarsDeleted != 1 || rep.BytesFreed != size1 || rep.BytesToFree != size2 {
		t.Fatalf("run 2: %+v, %v; want path 2 deleted, NAR 1 freed (%d bytes), %d bytes to free", rep, err, size1, size2)
	}
	// With no grace period, what this run frees is not also still to free.
	hash3, _, size3 := upload(t, c, 3)
	ix.SetCreated(hash3, old)
	rep, err = Run(ctx, c, ix, Policy{ByAge: true, OlderThan: 30 * 24 * time.Hour}, io.Discard)
	if err != nil || rep.BytesToFree != 0 || rep.BytesFreed != size2+size3 {
		t.Fatalf("run 3: %+v, %v; want %d bytes freed and none to free", rep, err, size2+size3)
	}
}

// TestNarGraceStartsWhenItsNarinfoGoes: the grace period of a NAR starts when gc deletes its last
// narinfo, whatever orphan mark an index kept from before it knew of that narinfo (replica A
// marked the NAR while replica B's narinfo for it was still to come). A's sync drops such a mark,
// and a collection deleting the narinfo starts a new one, so the NAR is not deleted with it.
func TestNarGraceStartsWhenItsNarinfoGoes(t *testing.T) {
	ctx := context.Background()
	be, a, ixA, b := twoReplicas(t)
	policy := Policy{ByAge: true, OlderThan: 30 * 24 * time.Hour, Grace: time.Hour}
	old := time.Now().Add(-40 * 24 * time.Hour)

	// Path 1: the NAR reaches B, A collects (and marks it), B gets the narinfo, A syncs.
	p1 := newPath(t, 1)
	p1.putNar(t, b)
	if _, err := Run(ctx, a, ixA, policy, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := ixA.Orphaned(p1.narName); err != nil {
		t.Fatalf("A's collection did not mark the NAR whose narinfo has not come: %v", err)
	}
	p1.putInfo(t, b)
	if _, err := a.Reindex(ctx, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ixA.Orphaned(p1.narName); err == nil {
		t.Error("A's sync indexed the narinfo but kept its NAR's orphan mark")
	}

	// Path 2: a stale mark, three days old, on a NAR a narinfo holds (as an index kept before
	// the sync cleared such marks); the path is old, gc deletes it, and must keep the NAR.
	p2 := newPath(t, 2)
	p2.putNar(t, b)
	p2.putInfo(t, b)
	hash2, nar2 := p2.hash, p2.narName
	if _, err := a.Reindex(ctx, false, nil); err != nil {
		t.Fatal(err)
	}
	ixA.SetOrphaned(nar2, time.Now().Add(-72*time.Hour))
	ixA.SetCreated(p1.hash, time.Now())
	ixA.SetCreated(hash2, old)
	rep, err := Run(ctx, a, ixA, policy, io.Discard)
	if err != nil || rep.PathsDeleted != 1 {
		t.Fatalf("gc on A: %+v, %v; want path 2 deleted", rep, err)
	}
	if _, err := be.Stat(ctx, nar2); err != nil {
		t.Errorf("the NAR was deleted in the run that deleted its narinfo, with no grace period: %v", err)
	}
}

// TestReplicaGCSeesReferrersCommittedElsewhere: gc on replica A keeps a path that a narinfo
// committed through replica B references, though A's periodic sync has not run since.
func TestReplicaGCSeesReferrersCommittedElsewhere(t *testing.T) {
	ctx := context.Background()
	be, a, ixA, b := twoReplicas(t)
	dep, depNar, _ := upload(t, a, 1)
	ixA.SetCreated(dep, time.Now().Add(-40*24*time.Hour))
	// The dependent goes through B: its reference to dep is found in the bucket.
	top := newPath(t, 999, dep)
	top.putNar(t, b)
	top.putInfo(t, b)
	var out bytes.Buffer
	rep, err := Run(ctx, a, ixA, Policy{ByAge: true, OlderThan: 30 * 24 * time.Hour, Grace: time.Hour}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, dep+".narinfo"); err != nil || rep.PathsDeleted != 0 {
		t.Errorf("gc on A deleted %d paths; the dependency's narinfo: %v\n%s", rep.PathsDeleted, err, out.String())
	}
	if _, err := be.Stat(ctx, depNar); err != nil {
		t.Errorf("the dependency's NAR: %v", err)
	}
}

// TestPulledOnly: with PulledOnly, only paths marked pulled go, top down; an uploaded path stays
// and holds its closure, the pulled paths in it included. The marks of deleted paths go too.
func TestPulledOnly(t *testing.T) {
	ctx := context.Background()
	c, ix := runCache(t)
	// 1 pulled, alone; 2 pulled, held by 3 (uploaded); 4 pulled, held by 5 (pulled); 6 uploaded.
	put := func(i int, refs ...string) string {
		p := newPath(t, i, refs...)
		p.putNar(t, c)
		p.putInfo(t, c)
		return p.hash
	}
	h1, h2 := put(1), put(2)
	h3 := put(3, h2)
	h4 := put(4)
	h5 := put(5, h4)
	h6 := put(6)
	if err := ix.MarkPulled(h1, h2, h4, h5); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := Run(ctx, c, ix, Policy{ByAge: true, PulledOnly: true, Grace: time.Hour}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.PathsDeleted != 3 {
		t.Fatalf("deleted %d paths, want 3 (1, 4, 5):\n%s", rep.PathsDeleted, out.String())
	}
	for h, want := range map[string]bool{h1: false, h2: true, h3: true, h4: false, h5: false, h6: true} {
		if has, err := ix.HasNarInfo(h); err != nil || has != want {
			t.Errorf("path %s: present %v (%v), want %v\n%s", h, has, err, want, out.String())
		}
	}
	var marks []string
	ix.Pulled(func(k string, _ time.Time) { marks = append(marks, k) })
	if len(marks) != 1 || marks[0] != h2 {
		t.Errorf("pulled marks after the run: %v, want only %s", marks, h2)
	}

	// Without PulledOnly, the same age policy takes the uploaded ones too.
	rep, err = Run(ctx, c, ix, Policy{ByAge: true, Grace: time.Hour}, io.Discard)
	if err != nil || rep.PathsDeleted != 3 {
		t.Fatalf("plain run: %+v, %v; want the 3 left deleted", rep, err)
	}
}
