package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// tokenSet holds the SHA-256 of each accepted upload token: comparing fixed-length digests in
// constant time leaks neither the tokens nor their lengths.
type tokenSet struct{ digests [][32]byte }

func newTokenSet(tokens []string) *tokenSet {
	ts := &tokenSet{}
	for _, t := range tokens {
		if t = strings.TrimSpace(t); t != "" {
			ts.digests = append(ts.digests, sha256.Sum256([]byte(t)))
		}
	}
	return ts
}

func (ts *tokenSet) valid(token string) bool {
	d := sha256.Sum256([]byte(token))
	ok := 0
	for i := range ts.digests {
		ok |= subtle.ConstantTimeCompare(d[:], ts.digests[i][:])
	}
	return ok == 1
}

// requestToken is the HTTP Basic password (what nix sends from its netrc-file; the login is
// ignored) or the Bearer token.
func requestToken(r *http.Request) (string, bool) {
	if _, pw, ok := r.BasicAuth(); ok {
		return pw, true
	}
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t), true
	}
	return "", false
}

// requireUpload refuses writes without a valid upload token.
func (s *Server) requireUpload(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := requestToken(r)
		if !ok || !s.auth.valid(tok) {
			w.Header().Set("WWW-Authenticate", `Basic realm="cached"`)
			msg := "upload needs a token: HTTP Basic password (netrc-file) or Bearer"
			if ok {
				msg = "upload token not accepted"
			}
			s.log.Warn("upload refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", msg)
			http.Error(w, msg, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
