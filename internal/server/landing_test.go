package server_test

import (
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/server"
)

// landingToken is an upload token distinctive enough that finding it on the page means a leak.
const landingToken = "landing-T0KEN-never-on-the-page-5d1e"

func TestLandingPageTellsHowToUseTheCache(t *testing.T) {
	tc := newTestCacheConfig(t, func(c *server.Config) { c.UploadTokens = []string{testToken, landingToken} })
	var narBytes uint64
	for _, name := range []string{"landing-a", "landing-b"} {
		u := newUpload(t, name, "xz")
		u.store(t, tc)
		narBytes += tc.narinfoOf(t, u).FileSize
	}

	r := tc.get(t, "/")
	mustStatus(t, "GET /", r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page := html.UnescapeString(string(r.Body)) // html/template writes the key's + as &#43;
	for _, want := range []string{
		`<code id="public-key">` + tc.Pub.String() + `</code>`,
		"substituters = " + tc.URL + "\n",
		"trusted-public-keys = " + tc.Pub.String() + "</pre>",
		"machine 127.0.0.1 login cached password TOKEN",
		"nix copy --to '" + tc.URL + "?compression=zstd' /nix/store/...",
		`<dd id="store-paths">2</dd>`,
		fmt.Sprintf(`data-bytes="%d"`, narBytes),
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the landing page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, landingToken) {
		t.Error("the landing page shows an upload token")
	}
	if r := tc.head(t, "/"); r.Status != http.StatusOK {
		t.Errorf("HEAD /: %d", r.Status)
	}
}

// TestLandingCountsAreNotRecountedPerView: the counts come from a cache refreshed at most every
// 30 s, so a path uploaded right after a view does not show at the next one; a page view never
// scans the index.
func TestLandingCountsAreNotRecountedPerView(t *testing.T) {
	tc := newTestCache(t)
	newUpload(t, "counted", "xz").store(t, tc)
	if page := string(tc.get(t, "/").Body); !strings.Contains(page, `<dd id="store-paths">1</dd>`) {
		t.Fatalf("first view: want 1 store path:\n%s", page)
	}
	newUpload(t, "uncounted", "xz").store(t, tc)
	if page := string(tc.get(t, "/").Body); !strings.Contains(page, `<dd id="store-paths">1</dd>`) {
		t.Errorf("second view right after an upload recounted the index:\n%s", page)
	}
}

func TestLandingPageEscapesHostileURLs(t *testing.T) {
	const script = "<script>alert(1)</script>"
	for _, tt := range []struct {
		name      string
		publicURL string
		host      string
	}{
		{"PublicURL", `http://evil.example/"><script>alert(1)</script>`, "cache.example"},
		{"Host header", "", `evil.example"><script>alert(1)</script>`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCacheConfig(t, func(c *server.Config) { c.PublicURL = tt.publicURL })
			// Called directly: net/http's server would refuse such a Host header before routing.
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Host = tt.host
			rec := httptest.NewRecorder()
			tc.Handler.ServeHTTP(rec, req)
			page := rec.Body.String()
			if rec.Code != http.StatusOK {
				t.Fatalf("GET /: %d %q", rec.Code, page)
			}
			if strings.Contains(page, script) {
				t.Errorf("the hostile URL reached the page unescaped:\n%s", page)
			}
			if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
				t.Errorf("the hostile URL is not shown escaped:\n%s", page)
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
		})
	}
}
