package server_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The narinfo lookup is the hot path: substituters ask for every path of a closure, and most
// answers are misses.

func BenchmarkGetNarInfoHit(b *testing.B) {
	tc := newTestCache(b)
	u := newUpload(b, "bench", "xz")
	u.store(b, tc)
	benchGet(b, tc, u.NarInfoPath(), http.StatusOK)
}

func BenchmarkGetNarInfoMiss(b *testing.B) {
	tc := newTestCache(b)
	benchGet(b, tc, "/"+storeHash("missing")+".narinfo", http.StatusNotFound)
}

func benchGet(b *testing.B, tc *testCache, path string, want int) {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		tc.Handler.ServeHTTP(rec, req)
		if rec.Code != want {
			b.Fatalf("GET %s: %d, want %d", path, rec.Code, want)
		}
	}
}
