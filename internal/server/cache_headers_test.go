package server_test

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/server"
)

// TestCacheControl pins what shared caches (proxies, CDNs) in front of the server may keep: NARs
// forever (named by their hash), narinfos for no longer than the default gc grace period (1 h)
// so that a proxy never serves a narinfo whose NAR is gone, misses briefly. A private cache's
// answers depend on the reader's token: "private" everywhere, never "public".
func TestCacheControl(t *testing.T) {
	for _, private := range []bool{false, true} {
		scope := map[bool]string{false: "public", true: "private"}[private]
		t.Run(scope, func(t *testing.T) {
			tc := newTestCacheConfig(t, func(c *server.Config) {
				c.Private = private
			})
			u := newUpload(t, "cache-control", "xz")
			u.store(t, tc)
			auth := withBasicAuth("nix", testToken) // write includes read
			r := tc.get(t, u.NarInfoPath(), auth)
			mustStatus(t, "GET "+u.NarInfoPath(), r, http.StatusOK)
			ni := tc.parseServed(t, r.Body)
			want := map[string]string{
				u.NarInfoPath():                        scope + ", max-age=3600",
				"/" + ni.URL:                           scope + ", max-age=31536000, immutable",
				"/" + storeHash("absent") + ".narinfo": scope + ", max-age=60",
				"/nix-cache-info":                      scope + ", max-age=300",
			}
			for path, cc := range want {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					r := tc.do(t, method, path, nil, auth)
					if r.Status != http.StatusOK && r.Status != http.StatusNotFound {
						t.Fatalf("%s %s: %d", method, path, r.Status)
					}
					if got := r.Header.Get("Cache-Control"); got != cc {
						t.Errorf("%s %s: Cache-Control %q, want %q", method, path, got, cc)
					}
					if private && strings.Contains(r.Header.Get("Cache-Control"), "public") {
						t.Errorf("%s %s on a private cache: Cache-Control %q", method, path, r.Header.Get("Cache-Control"))
					}
				}
			}
		})
	}
}

// TestNarInfoETag: a narinfo carries a strong ETag, the same on GET and HEAD and on every GET,
// and a matching If-None-Match gets 304 without the body.
func TestNarInfoETag(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "etag", "xz")
	u.store(t, tc)
	first := tc.get(t, u.NarInfoPath())
	mustStatus(t, "GET narinfo", first, http.StatusOK)
	etag := first.Header.Get("ETag")
	if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' {
		t.Fatalf("narinfo ETag %q, want a quoted strong validator", etag)
	}
	if again := tc.get(t, u.NarInfoPath()).Header.Get("ETag"); again != etag {
		t.Errorf("ETag changed between GETs: %q then %q", etag, again)
	}
	if head := tc.head(t, u.NarInfoPath()).Header.Get("ETag"); head != etag {
		t.Errorf("HEAD ETag %q, GET %q", head, etag)
	}
	other := newUpload(t, "etag-other", "xz")
	other.store(t, tc)
	if o := tc.get(t, other.NarInfoPath()).Header.Get("ETag"); o == etag {
		t.Errorf("two different narinfos share the ETag %q", etag)
	}
	r := tc.get(t, u.NarInfoPath(), withHeader("If-None-Match", etag))
	mustStatus(t, "GET narinfo If-None-Match", r, http.StatusNotModified)
	if len(r.Body) != 0 {
		t.Errorf("304 with a body of %d bytes", len(r.Body))
	}
	mustStatus(t, "GET narinfo stale If-None-Match", tc.get(t, u.NarInfoPath(), withHeader("If-None-Match", `"stale"`)), http.StatusOK)
}

// TestNarInfoAnsweredFromIndexAlone: narinfo hits and misses never touch the backend (they are
// most of a substituter's requests): with the backend's storage gone, both still answer.
func TestNarInfoAnsweredFromIndexAlone(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "index-only", "xz")
	u.store(t, tc)
	if err := os.RemoveAll(tc.Root); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		mustStatus(t, method+" narinfo hit without storage", tc.do(t, method, u.NarInfoPath(), nil), http.StatusOK)
		mustStatus(t, method+" narinfo miss without storage", tc.do(t, method, "/"+storeHash("never-uploaded")+".narinfo", nil), http.StatusNotFound)
	}
	// The NAR itself is gone with the storage: not a narinfo-path answer.
	ni := tc.parseServed(t, tc.get(t, u.NarInfoPath()).Body)
	if r := tc.get(t, "/"+ni.URL); r.Status == http.StatusOK {
		t.Errorf("GET %s with the storage gone: 200", ni.URL)
	}
}
