package server_test

import (
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

// Nix ≥ 2.35 takes a 401 as a hard error (up to 2.34, a 401 or 403 on a read meant "not in this
// cache"), and still takes a 403 as "absent". So a 401, with WWW-Authenticate, answers only
// credentials that are missing, unknown, revoked or expired; a valid token that lacks the scope
// gets a 403 saying which scope it has and which is needed, without WWW-Authenticate (other
// credentials are not what is wrong). A public cache never answers a read with either, whatever
// credentials come with it: nix sends its netrc credentials on every request to the host.

// authCache is a test cache with a token store: the fixed upload token (write), an admin token
// given as its digest, and stored read and write tokens and one that has expired.
type authCache struct {
	*testCache
	read, write, expired string
}

func newAuthCache(t *testing.T, private bool) *authCache {
	t.Helper()
	ix, err := index.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	tc := newTestCacheConfig(t, func(c *server.Config) {
		c.Index = ix
		c.Tokens = auth.NewStore(ix)
		c.Tokens.AddFixed(auth.HashToken(adminTestToken), auth.ScopeAdmin)
		c.Private = private
	})
	ac := &authCache{testCache: tc}
	for _, tok := range []struct {
		dst  *string
		body string
	}{
		{&ac.read, `{"name":"laptop","scope":"read"}`},
		{&ac.write, `{"name":"ci","scope":"write"}`},
		{&ac.expired, `{"name":"old","scope":"admin","expires":"1s"}`},
	} {
		r, out := createTokenAPI(t, tc, tok.body)
		mustStatus(t, "create token "+tok.body, r, http.StatusOK)
		*tok.dst = out["secret"].(string)
	}
	return ac
}

// waitExpired waits until ac's expiring token has expired.
func (ac *authCache) waitExpired(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r := ac.do(t, http.MethodGet, "/_cached/tokens", nil, withBasicAuth("nix", ac.expired))
		if r.Status != http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the token created to expire in 1s still works after 5s")
		}
	}
}

type authCase struct {
	who    string
	opt    reqOpt
	status int
	says   string // in the body
}

func (ac *authCache) cases(t *testing.T, wantNone, wantWrong, wantExpired, wantRead, wantWrite, wantAdmin int) []authCase {
	return []authCase{
		{"no credentials", withoutAuth(), wantNone, "needs a token"},
		{"unknown token", withBasicAuth("nix", "cached_not-a-token"), wantWrong, "not accepted"},
		{"expired token", withBasicAuth("nix", ac.expired), wantExpired, "expired at"},
		{"read token", withBasicAuth("nix", ac.read), wantRead, "token has read scope"},
		{"write token", withHeader("Authorization", "Bearer "+ac.write), wantWrite, "token has write scope"},
		{"upload token file (write)", withBasicAuth("nix", testToken), wantWrite, "token has write scope"},
		{"admin token", withBasicAuth("nix", adminTestToken), wantAdmin, ""},
	}
}

// checkAuthAnswer checks a 401 or 403 as nix ≥ 2.35 needs it.
func checkAuthAnswer(t *testing.T, what string, c authCase, r *response) {
	t.Helper()
	mustStatus(t, what+" with "+c.who, r, c.status)
	challenge := r.Header.Get("WWW-Authenticate")
	switch c.status {
	case http.StatusUnauthorized:
		if !strings.HasPrefix(challenge, "Basic ") {
			t.Errorf("%s with %s: 401 with WWW-Authenticate %q, want a Basic challenge", what, c.who, challenge)
		}
		if !strings.Contains(string(r.Body), c.says) {
			t.Errorf("%s with %s: 401 body %q does not say %q", what, c.who, r.Body, c.says)
		}
	case http.StatusForbidden:
		if challenge != "" {
			t.Errorf("%s with %s: 403 with WWW-Authenticate %q: other credentials are not what is missing", what, c.who, challenge)
		}
		if !strings.Contains(string(r.Body), c.says) {
			t.Errorf("%s with %s: 403 body %q does not say %q", what, c.who, r.Body, c.says)
		}
	default:
		if challenge != "" {
			t.Errorf("%s with %s: %d with WWW-Authenticate %q", what, c.who, r.Status, challenge)
		}
	}
}

// TestAuthFailuresAsNix235Expects: writes and the admin API on a public cache.
func TestAuthFailuresAsNix235Expects(t *testing.T) {
	ac := newAuthCache(t, false)
	u := newUpload(t, "auth-status", "xz") // stored as zstd: its uploaded name is recompressed
	u.store(t, ac.testCache)
	ac.waitExpired(t)
	stored := "/" + ac.narinfoOf(t, u).URL

	const un, fb, ok = http.StatusUnauthorized, http.StatusForbidden, http.StatusOK
	t.Run("PUT", func(t *testing.T) {
		// A narinfo PUT that is allowed is stored again (200): the same upload.
		for _, c := range ac.cases(t, un, un, un, fb, ok, ok) {
			if c.status == fb {
				c.says = "token has read scope, this needs write"
			}
			checkAuthAnswer(t, "PUT narinfo", c, ac.put(t, u.NarInfoPath(), u.Text(), c.opt))
		}
	})
	t.Run("admin API", func(t *testing.T) {
		for _, c := range ac.cases(t, un, un, un, fb, fb, ok) {
			if c.status == fb {
				c.says += ", this needs admin"
			}
			checkAuthAnswer(t, "GET /_cached/tokens", c, ac.do(t, http.MethodGet, "/_cached/tokens", nil, c.opt))
			checkAuthAnswer(t, "POST /_cached/gc", c, ac.do(t, http.MethodPost, "/_cached/gc?older-than=1000d&dry-run=1", nil, c.opt))
		}
	})
	t.Run("reads never", func(t *testing.T) {
		// Whatever credentials come with a read of a public cache, it is answered as without.
		reads := map[string]int{
			"/nix-cache-info": ok, u.NarInfoPath(): ok, stored: ok,
			"/" + storeHash("absent") + ".narinfo":                         http.StatusNotFound,
			"/nar/" + u.Hash + "-" + nix32(u.Info.NarHash.Digest) + ".nar": ok,
		}
		for _, c := range ac.cases(t, 0, 0, 0, 0, 0, 0) {
			for p, want := range reads {
				c.status = want
				checkAuthAnswer(t, "GET "+p, c, ac.get(t, p, c.opt))
			}
		}
	})
	t.Run("uploaded name", func(t *testing.T) {
		// Recompressed for token holders only: a valid token of any scope.
		for _, c := range ac.cases(t, un, un, un, ok, ok, ok) {
			if c.who == "no credentials" {
				c.says = "no token"
			}
			checkAuthAnswer(t, "GET "+u.NarPath, c, ac.get(t, u.NarPath, c.opt))
		}
	})
}

// TestAuthFailuresAsNix235ExpectsPrivate: reads of a --private cache need a token of any scope;
// missing or wrong credentials are a 401 (a hard error from Nix 2.35: a private cache does not
// look empty to a client whose netrc is missing or out of date).
func TestAuthFailuresAsNix235ExpectsPrivate(t *testing.T) {
	ac := newAuthCache(t, true)
	u := newUpload(t, "auth-status-private", "zstd")
	u.store(t, ac.testCache)
	ac.waitExpired(t)
	const un, ok = http.StatusUnauthorized, http.StatusOK
	for _, p := range []string{"/nix-cache-info", u.NarInfoPath(), u.NarPath} {
		for _, c := range ac.cases(t, un, un, un, ok, ok, ok) {
			checkAuthAnswer(t, "GET "+p, c, ac.get(t, p, c.opt))
		}
	}
	mustStatus(t, "GET /healthz without credentials", ac.get(t, "/healthz", withoutAuth()), ok)
}
