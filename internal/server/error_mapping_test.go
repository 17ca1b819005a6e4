package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/server"
)

// faultyBackend fails Stat or Open of the names fail picks while armed: an S3 outage or a disk
// I/O error, which a real backend cannot be made to produce on demand (hence a fake).
type faultyBackend struct {
	backend.Backend
	armed atomic.Bool
	fail  func(op, name string) bool
}

var errInjected = errors.New("injected backend failure")

func (f *faultyBackend) Stat(ctx context.Context, name string) (backend.FileInfo, error) {
	if f.armed.Load() && f.fail("stat", name) {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %w", name, errInjected)
	}
	return f.Backend.Stat(ctx, name)
}

func (f *faultyBackend) Open(ctx context.Context, name string) (backend.Object, error) {
	if f.armed.Load() && f.fail("open", name) {
		return nil, fmt.Errorf("open %s: %w", name, errInjected)
	}
	return f.Backend.Open(ctx, name)
}

func newFaultyCache(t *testing.T, opts cache.Options, edit func(*server.Config), fail func(op, name string) bool) (*testCache, *faultyBackend) {
	t.Helper()
	var fb *faultyBackend
	tc := newTestCacheOn(t, opts, edit, func(be backend.Backend) backend.Backend {
		fb = &faultyBackend{Backend: be, fail: fail}
		return fb
	})
	return tc, fb
}

// TestUploadedNameBackendFailureIs503: a NAR uploaded as xz and stored as zstd answers under its
// uploaded name; when the backend cannot say whether the stored NAR is there (Stat fails) or
// cannot open it, the answer is a 503 (nix retries), not a 404 (nix would believe it absent and,
// for the HEAD before an upload, send it again).
func TestUploadedNameBackendFailureIs503(t *testing.T) {
	for _, op := range []string{"stat", "open"} {
		t.Run(op, func(t *testing.T) {
			tc, fb := newFaultyCache(t, cache.Options{}, nil, func(o, name string) bool {
				return o == op && strings.HasSuffix(name, ".zst")
			})
			u := newUpload(t, "uploaded-name-fault-"+op, "xz")
			u.store(t, tc)
			stored := tc.narinfoOf(t, u).URL
			if !strings.HasSuffix(stored, ".zst") {
				t.Fatalf("stored as %s, want zstd", stored)
			}
			fb.armed.Store(true)
			if op == "stat" {
				mustStatus(t, "HEAD the uploaded name, backend failing", tc.head(t, u.NarPath), http.StatusServiceUnavailable)
			}
			r := tc.get(t, u.NarPath, withBasicAuth("nix", testToken))
			mustStatus(t, "GET the uploaded name, backend failing", r, http.StatusServiceUnavailable)
			fb.armed.Store(false)
			mustStatus(t, "HEAD the uploaded name, backend back", tc.head(t, u.NarPath), http.StatusOK)
			mustStatus(t, "GET the uploaded name, backend back", tc.get(t, u.NarPath, withBasicAuth("nix", testToken)), http.StatusOK)
		})
	}
}

// TestPinLookupFailureIs503: pinning asks whether the path is in the cache; a replica whose
// bucket cannot answer gets a 503 (retry), not a 400 saying the path does not exist. A path that
// really is absent is still a 400 naming it.
func TestPinLookupFailureIs503(t *testing.T) {
	tc, fb := newFaultyCache(t, cache.Options{ReadThrough: true}, func(c *server.Config) {
		ix, err := index.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ix.Close() })
		c.Index = ix
		c.Tokens = auth.NewStore(ix)
		c.Tokens.AddFixed(auth.HashToken(adminTestToken), auth.ScopeAdmin)
	}, func(_, name string) bool { return strings.HasSuffix(name, ".narinfo") })
	hash := storeHash("pin-lookup-fault")
	admin := withHeader("Authorization", "Bearer "+adminTestToken)
	r := tc.do(t, http.MethodPut, "/_cached/pins/"+hash, nil, admin)
	mustStatus(t, "pin an absent path", r, http.StatusBadRequest)
	if !strings.Contains(string(r.Body), hash) {
		t.Errorf("the refusal does not name %s: %q", hash, r.Body)
	}
	fb.armed.Store(true)
	other := storeHash("pin-lookup-fault-2") // not in the negative cache
	r = tc.do(t, http.MethodPut, "/_cached/pins/"+other, nil, admin)
	mustStatus(t, "pin while the bucket fails", r, http.StatusServiceUnavailable)
}

// TestHandlerRefusalsGoThroughWriteError: answers a handler decides itself (a 404 from the
// router, a hostile path) carry writeError's headers, like every other error.
func TestHandlerRefusalsGoThroughWriteError(t *testing.T) {
	tc := newTestCache(t)
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/no/such/thing", http.StatusNotFound},
		{http.MethodGet, "/" + storeHash("x") + ".unknown", http.StatusNotFound},
		{http.MethodGet, "/a/../nix-cache-info", http.StatusBadRequest},
	} {
		r := tc.do(t, c.method, c.path, nil)
		mustStatus(t, c.method+" "+c.path, r, c.status)
		if got := r.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s %s: Cache-Control %q, want no-store", c.method, c.path, got)
		}
	}
}
