package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/server"
	"github.com/cached-dev/cached/internal/signing"
)

func TestProbesWhenBackendRootVanishes(t *testing.T) {
	tc := newTestCache(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		r := tc.get(t, p)
		mustStatus(t, "GET "+p, r, http.StatusOK)
		if string(r.Body) != "ok\n" {
			t.Errorf("GET %s: body %q, want \"ok\\n\"", p, r.Body)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", p, cc)
		}
	}
	mustStatus(t, "HEAD /readyz", tc.head(t, "/readyz"), http.StatusOK)

	// The backend's root vanishes (an unmounted volume): not ready, but alive.
	if err := os.RemoveAll(tc.Root); err != nil {
		t.Fatal(err)
	}
	r := tc.get(t, "/readyz")
	mustStatus(t, "GET /readyz without the backend root", r, http.StatusServiceUnavailable)
	if !strings.Contains(string(r.Body), "backend") || strings.Contains(string(r.Body), "index") {
		t.Errorf("GET /readyz: body %q, want it to name the backend (only)", r.Body)
	}
	if strings.Contains(string(r.Body), tc.Root) {
		t.Errorf("GET /readyz: body %q shows a server path to anyone who asks", r.Body)
	}
	mustStatus(t, "GET /healthz without the backend root", tc.get(t, "/healthz"), http.StatusOK)
}

func TestReadyzIndexClosed(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := disk.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := index.Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	key, err := signing.Generate("test-1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(context.Background(), be, ix, key, log, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{Cache: c, Log: log})
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	if rec := get("/readyz"); rec.Code != http.StatusOK {
		t.Fatalf("GET /readyz with an open index: %d %q", rec.Code, rec.Body)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	rec := get("/readyz")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "index") || strings.Contains(rec.Body.String(), "backend") {
		t.Errorf("GET /readyz with the index closed: %d %q, want 503 naming the index (only)", rec.Code, rec.Body)
	}
	if rec := get("/healthz"); rec.Code != http.StatusOK {
		t.Errorf("GET /healthz with the index closed: %d, want 200", rec.Code)
	}
}
