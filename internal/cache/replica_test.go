package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/backend/s3"
	"github.com/cached-dev/cached/internal/journal"
)

// countingProxy passes S3 requests on to a real S3 server (keeping the Host header, so that
// signatures made for the proxy's address stay valid) and counts them: journal requests (its
// listing and object reads) apart from the others. It can refuse the journal's listings with a
// 503, a fault the real server cannot be made to produce for those requests alone.
type countingProxy struct {
	URL         string
	journal     atomic.Int64
	other       atomic.Int64
	failJournal atomic.Bool
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isJournal := strings.HasPrefix(r.URL.Query().Get("prefix"), journal.Prefix) || strings.Contains(r.URL.Path, "/"+journal.Prefix)
		if isJournal {
			p.journal.Add(1)
			if p.failJournal.Load() && r.URL.Query().Has("list-type") {
				http.Error(w, "refused by the test", http.StatusServiceUnavailable)
				return
			}
		} else {
			p.other.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func openS3At(t *testing.T, g *backendtest.VersityGW, endpoint string) *s3.Backend {
	t.Helper()
	b, err := s3.Open(t.Context(), s3.Config{Bucket: g.Bucket, Endpoint: endpoint, Region: g.Region,
		PathStyle: true, AccessKey: g.Access, SecretKey: g.Secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestJournalReplicas: two caches on one versitygw bucket, B's requests counted by a proxy.
// A path uploaded through A is served by B within the journal's bound, and a path deleted
// through A stops being served; B's misses cost no bucket request while it follows the journal;
// when its polls fail, B goes back to asking the bucket on a miss and finds what A uploaded.
func TestJournalReplicas(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	proxy := newCountingProxy(t, g.Endpoint)
	opts := Options{ReadThrough: true, NegativeTTL: time.Minute}
	a := newTestCacheOn(t, openS3At(t, g, g.Endpoint), opts)
	b := newTestCacheOn(t, openS3At(t, g, proxy.URL), opts)
	ctx := t.Context()
	const every = 100 * time.Millisecond
	if _, err := a.FollowJournal(ctx, every); err != nil {
		t.Fatal(err)
	}
	fb, err := b.FollowJournal(ctx, every)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.FollowJournal(ctx, every); err == nil {
		t.Error("a second FollowJournal was accepted")
	}
	waitUntil(t, "B follows the journal", fb.Current)

	// Misses: no bucket request but the journal's polls.
	other, polls := proxy.other.Load(), proxy.journal.Load()
	for i := range 1000 {
		if _, err := b.NarInfo(ctx, testHash(100+i%900)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("miss %d: %v", i, err)
		}
		if ok, err := b.HasNarInfo(ctx, testHash(100+i%900)); ok || err != nil {
			t.Fatalf("HEAD miss %d: %v, %v", i, ok, err)
		}
	}
	if n := proxy.other.Load() - other; n != 0 {
		t.Errorf("2000 misses on a replica following the journal made %d bucket requests, want 0", n)
	}
	t.Logf("2000 misses: 0 bucket requests; %d journal requests meanwhile", proxy.journal.Load()-polls)

	// Upload through A: B serves it within the bound.
	start := time.Now()
	p := uploadPath(t, a, 1)
	bound := fb.StaleAfter() + time.Second
	waitUntilWithin(t, "B serves the path uploaded through A", bound, func() bool {
		_, err := b.NarInfo(ctx, p.hash)
		return err == nil
	})
	t.Logf("uploaded through A, served by B after %s", time.Since(start).Round(time.Millisecond))
	textA, _ := a.NarInfo(ctx, p.hash)
	textB, _ := b.NarInfo(ctx, p.hash)
	if string(textA) != string(textB) {
		t.Errorf("B serves\n%s\nA serves\n%s", textB, textA)
	}

	// Delete through A: B stops serving it.
	if err := a.DeleteNarInfo(ctx, p.hash); err != nil {
		t.Fatal(err)
	}
	waitUntilWithin(t, "B drops the path deleted through A", bound, func() bool {
		_, err := b.NarInfo(ctx, p.hash)
		return errors.Is(err, ErrNotFound)
	})

	// B's journal polls fail: past the stale bound its misses ask the bucket, and find what A
	// uploaded meanwhile.
	proxy.failJournal.Store(true)
	waitUntilWithin(t, "B's journal goes stale", bound, func() bool { return !fb.Current() })
	p2 := uploadPath(t, a, 2)
	other = proxy.other.Load()
	if _, err := b.NarInfo(ctx, p2.hash); err != nil {
		t.Fatalf("B with a stale journal: %v, want the path from the bucket", err)
	}
	if proxy.other.Load() == other {
		t.Error("B with a stale journal answered without asking the bucket")
	}
	other = proxy.other.Load()
	if _, err := b.NarInfo(ctx, testHash(999)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("miss with a stale journal: %v", err)
	}
	if proxy.other.Load() == other {
		t.Error("a miss on B with a stale journal did not ask the bucket")
	}
	proxy.failJournal.Store(false)
	waitUntil(t, "B follows the journal again", fb.Current)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitUntilWithin(t, what, 10*time.Second, cond)
}

func waitUntilWithin(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJournalNeedsSharedBackend: a cache alone on its backend has nothing to follow.
func TestJournalNeedsSharedBackend(t *testing.T) {
	c, _ := newTestCache(t, Options{})
	if _, err := c.FollowJournal(context.Background(), time.Second); err == nil {
		t.Fatal("FollowJournal accepted without ReadThrough")
	}
}

// TestApplyJournal: what a replica does with each kind of record, on two caches sharing one
// disk backend. A Put is indexed from its text, unless it is late (then the backend decides)
// or its narinfo is not the path's; a Delete drops the path only if the backend lost it.
func TestApplyJournal(t *testing.T) {
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{ReadThrough: true, NegativeTTL: time.Minute}
	a := newTestCacheOn(t, be, opts)
	b := newTestCacheOn(t, be, opts)
	ctx := t.Context()
	p := uploadPath(t, a, 1)
	obj, err := be.Open(ctx, p.hash+".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(obj)
	obj.Close()
	indexed := func(hash string) bool {
		ok, err := b.index.HasNarInfo(hash)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	apply := func(late bool, recs ...journal.Record) {
		t.Helper()
		if err := b.applyJournal(ctx, recs, time.Now(), late); err != nil {
			t.Fatal(err)
		}
	}

	apply(false, journal.Record{Op: journal.Put, Hash: p.hash, NarInfo: text})
	if !indexed(p.hash) {
		t.Fatal("a Put was not indexed")
	}
	if got, err := b.NarInfo(ctx, p.hash); err != nil || !strings.Contains(string(got), "StorePath:") {
		t.Fatalf("B serves %q, %v", got, err)
	}
	// Late, and the backend does not have it: not indexed.
	other := testHash(2)
	otherText := []byte(strings.ReplaceAll(string(text), p.hash, other))
	apply(true, journal.Record{Op: journal.Put, Hash: other, NarInfo: otherText})
	if indexed(other) {
		t.Error("a late Put of a path the backend lacks was indexed")
	}
	// A narinfo that names another path, or does not parse: skipped, the rest applied.
	apply(false, journal.Record{Op: journal.Put, Hash: testHash(3), NarInfo: text},
		journal.Record{Op: journal.Put, Hash: testHash(4), NarInfo: []byte("garbage")},
		journal.Record{Op: journal.Put, Hash: other, NarInfo: otherText})
	if indexed(testHash(3)) || indexed(testHash(4)) {
		t.Error("a Put whose narinfo is not the path's was indexed")
	}
	if !indexed(other) {
		t.Error("the Put after skipped ones was not applied")
	}
	// Delete while the backend still has it (uploaded again since): kept.
	apply(false, journal.Record{Op: journal.Delete, Hash: p.hash})
	if !indexed(p.hash) {
		t.Error("a Delete of a path the backend still has dropped it")
	}
	if err := a.DeleteNarInfo(ctx, p.hash); err != nil {
		t.Fatal(err)
	}
	apply(false, journal.Record{Op: journal.Delete, Hash: p.hash})
	if indexed(p.hash) {
		t.Error("a Delete of a path the backend lost kept it")
	}
}

// TestJournalFlushedAtStop: records queued when the journal's context ends are written before
// WaitJournal returns, so a replica stopping right after an upload still tells the others.
func TestJournalFlushedAtStop(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	bk := openS3At(t, g, g.Endpoint)
	a := newTestCacheOn(t, bk, Options{ReadThrough: true})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// An hour between polls: after its first flush the writer waits six minutes before the next,
	// so the second upload is still queued when the context ends.
	if _, err := a.FollowJournal(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	uploadPath(t, a, 1)
	p := uploadPath(t, a, 2)
	cancel()
	a.WaitJournal()
	var found bool
	err := bk.List(t.Context(), journal.Prefix, func(fi backend.FileInfo) error {
		o, err := bk.Open(t.Context(), fi.Name)
		if err != nil {
			return err
		}
		defer o.Close()
		b, err := io.ReadAll(o)
		found = found || strings.Contains(string(b), p.hash)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Errorf("no journal object names %s, uploaded just before the journal stopped", p.hash)
	}
}
