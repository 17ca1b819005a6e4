package e2e

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// createToken makes a scoped token with the CLI and returns its secret and id.
func createToken(t *testing.T, srv *serverProc, name, scope string) (secret, id string) {
	t.Helper()
	out, err := cachedAdmin(t, srv, "token", "create", name, "--scope", scope)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`token ([0-9a-f]+) .*:\n(cached_[0-9a-f]+)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("token create printed no token:\n%s", out)
	}
	return m[2], m[1]
}

func statusWith(t *testing.T, method, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(""))
	if token != "" {
		req.SetBasicAuth("cached", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestTokenScopes: on a --private cache, each scope is allowed and refused where it should be,
// over HTTP for GET, HEAD and PUT and through real nix with a netrc file; a revoked token stops
// working at once.
func TestTokenScopes(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir(), "--private")
	readTok, readID := createToken(t, srv, "laptop", "read")
	writeTok, _ := createToken(t, srv, "ci", "write")
	adminTok, _ := createToken(t, srv, "ops", "admin")

	writer := newNixClient(t, hostOf(srv.URL), writeTok)
	c := buildClosure(t, writer, 4096)
	writer.run("nix", "copy", "--to", srv.URL, c.Top)
	narinfoURL := srv.URL + "/" + hashOf(c.Top) + ".narinfo"

	for _, tc := range []struct {
		name, token    string
		get, head, put int
		admin          int
	}{
		{"none", "", 401, 401, 401, 401},
		{"wrong", "cached_not-a-token", 401, 401, 401, 401},
		{"read", readTok, 200, 200, 403, 403},
		{"write", writeTok, 200, 200, 400, 403}, // allowed; the empty body is then refused
		{"admin", adminTok, 200, 200, 400, 200},
	} {
		if got := statusWith(t, "GET", narinfoURL, tc.token); got != tc.get {
			t.Errorf("%s token: GET narinfo = %d, want %d", tc.name, got, tc.get)
		}
		if got := statusWith(t, "HEAD", narinfoURL, tc.token); got != tc.head {
			t.Errorf("%s token: HEAD narinfo = %d, want %d", tc.name, got, tc.head)
		}
		if got := statusWith(t, "PUT", srv.URL+"/"+strings.Repeat("0", 32)+".narinfo", tc.token); got != tc.put {
			t.Errorf("%s token: PUT narinfo = %d, want %d", tc.name, got, tc.put)
		}
		if got := statusWith(t, "GET", srv.URL+"/_cached/tokens", tc.token); got != tc.admin {
			t.Errorf("%s token: GET /_cached/tokens = %d, want %d", tc.name, got, tc.admin)
		}
	}
	if got := statusWith(t, "GET", srv.URL+"/healthz", ""); got != 200 && got != 404 {
		t.Errorf("health check on a private cache: %d", got)
	}

	// Through nix, with each client: the read token substitutes, cannot upload; no token sees
	// nothing (up to Nix 2.34 a 401 on a read means "not in this cache"); a revoked token stops
	// working at once.
	forEachNix(t, func(t *testing.T, v nixVersion) {
		readTok, readID := createToken(t, srv, "laptop-"+v.Name, "read")
		reader := newNixClientOf(t, v, hostOf(srv.URL), readTok)
		if err := substitutes(t, reader, srv, c.Top); err != nil {
			t.Fatalf("read token cannot substitute: %v", err)
		}
		c2 := buildClosure(t, reader, 1024)
		if _, err := reader.try("nix", "copy", "--to", srv.URL, c2.Top); err == nil {
			t.Error("nix copy with a read token succeeded")
		}
		anon := newNixClientOf(t, v, hostOf(srv.URL), "")
		if err := substitutes(t, anon, srv, c.Top); err == nil {
			t.Error("substitution from a private cache without a token succeeded")
		}
		if out, err := cachedAdmin(t, srv, "token", "revoke", readID); err != nil {
			t.Fatalf("revoke: %v\n%s", err, out)
		}
		if got := statusWith(t, "GET", narinfoURL, readTok); got != 401 {
			t.Errorf("revoked token: GET narinfo = %d, want 401", got)
		}
		if err := substitutes(t, reader, srv, c.Top); err == nil {
			t.Error("a revoked token still substitutes")
		}
	})
	if out, err := cachedAdmin(t, srv, "token", "revoke", readID); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	if got := statusWith(t, "GET", narinfoURL, readTok); got != 401 {
		t.Errorf("revoked token: GET narinfo = %d, want 401", got)
	}
	out, err := cachedAdmin(t, srv, "token", "list")
	if err != nil || strings.Contains(out, readID) || !strings.Contains(out, "ci") {
		t.Errorf("token list after revoke: %v\n%s", err, out)
	}
	if strings.Contains(out, writeTok) || strings.Contains(out, adminTok) {
		t.Error("token list shows secrets")
	}
}
