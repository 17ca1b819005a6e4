package server_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/server"
)

const adminTestToken = "admin-secret"

// newTokenCache is a test cache with a token store; its admin token is given only as a digest.
func newTokenCache(t *testing.T) *testCache {
	t.Helper()
	ix, err := index.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return newTestCacheConfig(t, func(c *server.Config) {
		c.Index = ix
		c.Tokens = auth.NewStore(ix)
		c.Tokens.AddFixed(auth.HashToken(adminTestToken), auth.ScopeAdmin)
	})
}

func createTokenAPI(t *testing.T, tc *testCache, body string) (*response, map[string]any) {
	t.Helper()
	r := tc.do(t, http.MethodPost, "/_cached/tokens", []byte(body), withHeader("Authorization", "Bearer "+adminTestToken))
	var out map[string]any
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &out); err != nil {
			t.Fatalf("create token: %v: %s", err, r.Body)
		}
	}
	return r, out
}

// TestTokenExpiry: a token created with an expiry works until then, and afterwards gets 401 with
// a message saying it expired and when; the list shows the expiry.
func TestTokenExpiry(t *testing.T) {
	tc := newTokenCache(t)
	r, tok := createTokenAPI(t, tc, `{"name":"ci","scope":"write","expires":"2s"}`)
	mustStatus(t, "create token", r, http.StatusOK)
	secret, _ := tok["secret"].(string)
	expires, err := time.Parse(time.RFC3339Nano, tok["expires"].(string))
	if err != nil || time.Until(expires) > 2*time.Second || time.Until(expires) < time.Second {
		t.Fatalf("expires %v (%v), want about 2s from now", tok["expires"], err)
	}
	u := newUpload(t, "expiring", "zstd")
	mustStatus(t, "PUT nar with a fresh token", tc.put(t, u.NarPath, u.File, withBasicAuth("nix", secret)), http.StatusOK)

	list := tc.do(t, http.MethodGet, "/_cached/tokens", nil, withHeader("Authorization", "Bearer "+adminTestToken))
	mustStatus(t, "list tokens", list, http.StatusOK)
	if !strings.Contains(string(list.Body), `"expires":"`+tok["expires"].(string)+`"`) {
		t.Errorf("token list does not show the expiry: %s", list.Body)
	}

	time.Sleep(time.Until(expires) + 50*time.Millisecond)
	r = tc.put(t, u.NarInfoPath(), u.Text(), withBasicAuth("nix", secret))
	mustStatus(t, "PUT narinfo with an expired token", r, http.StatusUnauthorized)
	want := "expired at " + expires.UTC().Format(time.RFC3339)
	if body := string(r.Body); !strings.Contains(body, want) || !strings.Contains(body, tok["id"].(string)) {
		t.Errorf("401 body %q should say %q and name the token", body, want)
	}
	if r.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	mustStatus(t, "narinfo after a refused PUT", tc.get(t, u.NarInfoPath()), http.StatusNotFound)
}

// TestTokenExpiryRefused: a bad expiry is a 400 naming the field, and creates nothing.
func TestTokenExpiryRefused(t *testing.T) {
	tc := newTokenCache(t)
	for _, exp := range []string{"soon", "0s", "0d", "-1d", "1y", "999999999999d", "NaNd"} {
		r, _ := createTokenAPI(t, tc, `{"name":"ci","scope":"write","expires":"`+exp+`"}`)
		mustStatus(t, "create token expiring in "+exp, r, http.StatusBadRequest)
		if !strings.Contains(string(r.Body), "expires") {
			t.Errorf("expires %q: body %q does not name the field", exp, r.Body)
		}
	}
	list := tc.do(t, http.MethodGet, "/_cached/tokens", nil, withHeader("Authorization", "Bearer "+adminTestToken))
	if string(list.Body) != "[]\n" {
		t.Errorf("refused creations left tokens: %s", list.Body)
	}
}

// TestHashedUploadToken: an upload token given as its SHA-256 digest accepts the token and not
// the digest.
func TestHashedUploadToken(t *testing.T) {
	tc := newTestCacheConfig(t, func(c *server.Config) { c.UploadTokens = []string{auth.HashToken(testToken)} })
	u := newUpload(t, "hashed", "zstd")
	r := tc.put(t, u.NarPath, u.File, withBasicAuth("nix", auth.HashToken(testToken)))
	mustStatus(t, "PUT with the digest as password", r, http.StatusUnauthorized)
	u.store(t, tc)
	mustStatus(t, "narinfo uploaded with the token", tc.get(t, u.NarInfoPath()), http.StatusOK)
}
