package journal

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/backend/s3"
)

// applied collects what a follower applies.
type applied struct {
	mu   sync.Mutex
	recs []Record
	late []bool
}

func (a *applied) apply(_ context.Context, recs []Record, _ time.Time, late bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range recs {
		a.recs = append(a.recs, r)
		a.late = append(a.late, late)
	}
	return nil
}

func (a *applied) take() ([]Record, []bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, l := a.recs, a.late
	a.recs, a.late = nil, nil
	return r, l
}

// syncLog is a log whose lines a test reads.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestFollowS3(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b, err := s3.Open(t.Context(), s3.Config{Bucket: g.Bucket, Endpoint: g.Endpoint, Region: g.Region,
		PathStyle: true, AccessKey: g.Access, SecretKey: g.Secret, Prefix: "cache"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok := backend.As[ListerFrom](b); !ok {
		t.Fatal("the S3 backend lists from a position")
	}
	testFollow(t, b)
}

// TestFollowDisk: a backend without ListerFrom is listed whole and sorted.
func TestFollowDisk(t *testing.T) {
	b, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testFollow(t, b)
}

func testFollow(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	var logged syncLog
	log := slog.New(slog.NewTextHandler(&logged, nil))
	self, err := NewWriter(b, "self", log)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewWriter(b, "other", log)
	if err != nil {
		t.Fatal(err)
	}
	var got applied
	f, err := NewFollower(b, FollowerConfig{Self: "self", Every: time.Hour, Apply: got.apply, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if f.Current() {
		t.Fatal("current before any sync")
	}
	// Run: a full sync, then the first poll (the interval is an hour: later polls are the test's).
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	synced := make(chan struct{})
	go f.Run(runCtx, func(context.Context) error { close(synced); return nil })
	<-synced
	waitFor(t, "the first poll", f.Current)

	put := Record{Op: Put, Hash: hashA, NarInfo: []byte("StorePath: /nix/store/" + hashA + "-a\n")}
	del := Record{Op: Delete, Hash: hashB}
	other.Add(put)
	other.Add(del)
	self.Add(Record{Op: Delete, Hash: hashA})
	for _, w := range []*Writer{other, self} {
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if w.Pending() != 0 {
			t.Fatalf("%d records pending after Flush", w.Pending())
		}
	}
	if err := f.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	recs, late := got.take()
	if len(recs) != 2 || recs[0].Op != Put || recs[0].Hash != hashA || !bytes.Equal(recs[0].NarInfo, put.NarInfo) ||
		recs[1].Op != Delete || recs[1].Hash != hashB || late[0] || late[1] {
		t.Fatalf("applied %+v (late %v), want the other writer's two records in order, not late", recs, late)
	}
	// A second poll lists them again (lookback) but applies nothing twice.
	if err := f.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if recs, _ := got.take(); len(recs) != 0 {
		t.Fatalf("applied again: %+v", recs)
	}

	// A malformed object is skipped with a log line; the objects around it are applied.
	now := time.Now()
	if err := b.Save(ctx, ObjectName(now, "junk"), strings.NewReader("not a journal\n")); err != nil {
		t.Fatal(err)
	}
	other.Add(Record{Op: Delete, Hash: hashA})
	if err := other.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// An object that shows up after a newer one was applied is late.
	if err := b.Save(ctx, ObjectName(now.Add(-time.Second), "slow"), bytes.NewReader(Format([]Record{del}))); err != nil {
		t.Fatal(err)
	}
	if err := f.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	recs, late = got.take()
	if len(recs) != 2 || recs[0].Hash != hashB || !late[0] || recs[1].Hash != hashA || late[1] {
		t.Fatalf("applied %+v (late %v), want the late delete of B then the delete of A", recs, late)
	}
	if !strings.Contains(logged.String(), "journal: skipping a malformed object") || !strings.Contains(logged.String(), "junk") {
		t.Errorf("no log line for the malformed object:\n%s", logged.String())
	}

	// Objects older than the expiry go, by any writer; newer ones stay.
	if err := b.Save(ctx, ObjectName(now.Add(-time.Hour), "old"), bytes.NewReader(Format([]Record{del}))); err != nil {
		t.Fatal(err)
	}
	n, err := Expire(ctx, b, 10*time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("Expire removed %d (%v), want the one old object", n, err)
	}
	left := 0
	if err := b.List(ctx, Prefix, func(backend.FileInfo) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 5 {
		t.Errorf("%d journal objects left after expiry, want 5", left)
	}
	if f.Requests() == 0 {
		t.Error("the follower counted no requests")
	}
}

// TestFollowerGoesStale: a follower whose polls fail stops being Current after StaleAfter, and
// is Current again after a poll succeeds. The backend is a real versitygw, stopped and started.
func TestFollowerGoesStale(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b, err := s3.Open(t.Context(), s3.Config{Bucket: g.Bucket, Endpoint: g.Endpoint, Region: g.Region,
		PathStyle: true, AccessKey: g.Access, SecretKey: g.Secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var got applied
	const every = 50 * time.Millisecond
	f, err := NewFollower(b, FollowerConfig{Self: "self", Every: every, Apply: got.apply})
	if err != nil {
		t.Fatal(err)
	}
	go f.Run(t.Context(), func(context.Context) error { return nil })
	waitFor(t, "current", f.Current)
	g.Stop()
	start := time.Now()
	waitFor(t, "stale", func() bool { return !f.Current() })
	if d := time.Since(start); d > f.StaleAfter()+time.Second {
		t.Errorf("stale only after %s, bound %s", d, f.StaleAfter())
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "current again", f.Current)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
