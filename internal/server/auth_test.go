package server_test

import (
	"net/http"
	"testing"

	"github.com/cached-dev/cached/internal/server"
)

// TestUploadsNeedTokenReadsDoNot: nix sends the token as the HTTP Basic password from its
// netrc-file (any login); Bearer is accepted too. A refused upload stores nothing.
func TestUploadsNeedTokenReadsDoNot(t *testing.T) {
	tests := []struct {
		name   string
		auth   []reqOpt
		status int
	}{
		{"no Authorization", []reqOpt{withoutAuth()}, http.StatusUnauthorized},
		{"wrong Basic password", []reqOpt{withBasicAuth("nix", "wrong")}, http.StatusUnauthorized},
		{"token as Basic login, not password", []reqOpt{withBasicAuth(testToken, "")}, http.StatusUnauthorized},
		{"token with a suffix", []reqOpt{withBasicAuth("nix", testToken+"x")}, http.StatusUnauthorized},
		{"wrong Bearer", []reqOpt{withHeader("Authorization", "Bearer wrong")}, http.StatusUnauthorized},
		{"unknown scheme", []reqOpt{withHeader("Authorization", "Token "+testToken)}, http.StatusUnauthorized},
		{"Basic password, any login", []reqOpt{withBasicAuth("whoever", testToken)}, http.StatusOK},
		{"Bearer token", []reqOpt{withHeader("Authorization", "Bearer "+testToken)}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCache(t)
			u := newUpload(t, "auth", "zstd") // kept as uploaded by the default store compression
			logPath := "/log/" + u.Info.Deriver

			r := tc.put(t, u.NarPath, u.File, tt.auth...)
			mustStatus(t, "PUT nar", r, tt.status)
			if tt.status == http.StatusUnauthorized {
				if r.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				mustStatus(t, "HEAD nar after refused PUT", tc.head(t, u.NarPath), http.StatusNotFound)
				// Store the NAR with the right token so that only the narinfo is refused next.
				mustStatus(t, "PUT nar with token", tc.put(t, u.NarPath, u.File), http.StatusOK)
			}
			mustStatus(t, "PUT narinfo", tc.put(t, u.NarInfoPath(), u.Text(), tt.auth...), tt.status)
			mustStatus(t, "PUT log", tc.put(t, logPath, []byte("log\n"), tt.auth...), tt.status)
			mustStatus(t, "PUT nix-cache-info", tc.put(t, "/nix-cache-info", []byte("StoreDir: /nix/store\n"), tt.auth...), tt.status)

			want := http.StatusOK
			if tt.status == http.StatusUnauthorized {
				want = http.StatusNotFound
			}
			// Reads never need a token.
			mustStatus(t, "GET narinfo without token", tc.get(t, u.NarInfoPath()), want)
			mustStatus(t, "HEAD narinfo without token", tc.head(t, u.NarInfoPath()), want)
			mustStatus(t, "GET log without token", tc.get(t, logPath), want)
			mustStatus(t, "GET nar without token", tc.get(t, u.NarPath), http.StatusOK)
			mustStatus(t, "GET nix-cache-info without token", tc.get(t, "/nix-cache-info"), http.StatusOK)
		})
	}
}

// TestEmptyTokenListRefusesEveryUpload: a server configured without tokens must not accept an
// empty Basic password.
func TestEmptyTokenListRefusesEveryUpload(t *testing.T) {
	tc := newTestCacheConfig(t, func(c *server.Config) { c.UploadTokens = []string{"", "  "} })
	u := newUpload(t, "no-tokens", "xz")
	for _, auth := range [][]reqOpt{{withBasicAuth("nix", "")}, {withBasicAuth("nix", "  ")}, {withHeader("Authorization", "Bearer ")}, {withoutAuth()}} {
		mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File, auth...), http.StatusUnauthorized)
	}
}
