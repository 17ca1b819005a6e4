package server_test

import (
	"net/http"
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
