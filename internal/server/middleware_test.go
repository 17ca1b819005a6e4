package server_test

import (
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/server"
)

// newLoggedTestCache is a test stack whose server logs everything (debug and up) into a buffer.
func newLoggedTestCache(t *testing.T, edit func(*server.Config)) (*testCache, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	tc := newTestCacheConfig(t, func(c *server.Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if edit != nil {
			edit(c)
		}
	})
	return tc, logs
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{16}$`)

func TestRequestID(t *testing.T) {
	tc, logs := newLoggedTestCache(t, nil)
	miss := "/" + storeHash("request-id") + ".narinfo"

	a, b := tc.get(t, miss), tc.get(t, miss)
	idA, idB := a.Header.Get("X-Request-Id"), b.Header.Get("X-Request-Id")
	if !generatedID.MatchString(idA) || !generatedID.MatchString(idB) || idA == idB {
		t.Errorf("generated request IDs %q and %q: want two different 16-hex-digit IDs", idA, idB)
	}

	for _, tt := range []struct{ name, sent, want string }{
		{"sane incoming ID kept", "req-0123.abc_DEF:9", "req-0123.abc_DEF:9"},
		{"too long", strings.Repeat("a", 65), ""},
		{"space", "a b", ""},
		{"quote", `a"b`, ""},
		{"log-line injection", "x msg=forged", ""},
		{"non-ASCII", "caf\u00e9", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := tc.get(t, miss, withHeader("X-Request-Id", tt.sent))
			got := r.Header.Get("X-Request-Id")
			if tt.want != "" && got != tt.want {
				t.Errorf("X-Request-Id %q echoed as %q", tt.sent, got)
			}
			if tt.want == "" && !generatedID.MatchString(got) {
				t.Errorf("X-Request-Id %q: answered %q, want it replaced by a generated ID", tt.sent, got)
			}
			if !strings.Contains(logs.String(), "req_id="+got+"\n") {
				t.Errorf("no log line with req_id=%s:\n%s", got, logs.String())
			}
		})
	}
	// Each request is one log line naming its ID.
	if n := strings.Count(logs.String(), "req_id="+idA); n != 1 {
		t.Errorf("request %s is in %d log lines, want 1:\n%s", idA, n, logs.String())
	}
	// Probes and scrapes are logged below info, so they do not drown the request log.
	tc.get(t, "/healthz")
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "path=/healthz") && !strings.Contains(line, "level=DEBUG") {
			t.Errorf("probe logged above debug: %s", line)
		}
	}
}

// TestLogsNeverHoldSecrets sends authenticated uploads, refused and accepted, with the token as a
// Basic password, as a Bearer token and in the URL's query, and checks that neither the token nor
// its Basic encoding nor the signing key reach the log.
func TestLogsNeverHoldSecrets(t *testing.T) {
	const token = "upl0ad-T0KEN-must-not-be-logged-7f3a9c"
	const wrong = "wr0ng-T0KEN-must-not-be-logged-either-2b8e"
	tc, logs := newLoggedTestCache(t, func(c *server.Config) { c.UploadTokens = []string{token} })
	u := newUpload(t, "log-secrets", "xz")

	mustStatus(t, "PUT nar, wrong Basic password", tc.put(t, u.NarPath, u.File, withBasicAuth("nix", wrong)), http.StatusUnauthorized)
	mustStatus(t, "PUT nar, wrong Bearer", tc.put(t, u.NarPath, u.File, withHeader("Authorization", "Bearer "+wrong)), http.StatusUnauthorized)
	mustStatus(t, "PUT nar, token in the query only", tc.put(t, u.NarPath+"?token="+wrong, u.File, withoutAuth()), http.StatusUnauthorized)
	mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File, withBasicAuth("nix", token)), http.StatusOK)
	mustStatus(t, "PUT narinfo", tc.put(t, u.NarInfoPath(), u.Text(), withHeader("Authorization", "Bearer "+token)), http.StatusOK)
	bad := u.Text()
	bad = []byte(strings.Replace(string(bad), "NarSize: ", "NarSize: 1", 1))
	mustStatus(t, "PUT refused narinfo", tc.put(t, "/"+storeHash("other")+".narinfo", bad, withBasicAuth(token, token)), http.StatusBadRequest)
	mustStatus(t, "GET narinfo", tc.get(t, u.NarInfoPath()), http.StatusOK)

	out := logs.String()
	if strings.Count(out, "msg=request") < 7 {
		t.Fatalf("expected a log line per request, got:\n%s", out)
	}
	secrets := map[string]string{
		"the upload token":            token,
		"the wrong token":             wrong,
		"the Basic credentials":       base64.StdEncoding.EncodeToString([]byte("nix:" + token)),
		"the wrong Basic credentials": base64.StdEncoding.EncodeToString([]byte("nix:" + wrong)),
		"the signing key":             tc.secretKeyString()[strings.IndexByte(tc.secretKeyString(), ':')+1:],
	}
	for what, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the log holds %s (%q):\n%s", what, s, out)
		}
	}
}

// BenchmarkGetNarInfoHitLogged is BenchmarkGetNarInfoHit with the request line written (Info
// level), as a production server runs: it measures what one log line and the metrics cost.
func BenchmarkGetNarInfoHitLogged(b *testing.B) {
	tc := newTestCacheConfig(b, func(c *server.Config) {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	u := newUpload(b, "bench", "xz")
	u.store(b, tc)
	benchGet(b, tc, u.NarInfoPath(), http.StatusOK)
}
