package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/cached-dev/cached/internal/auth"
)

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

// requireScope refuses requests without a token granting at least scope: 401 when the token is
// missing or unknown, 403 when it is known but does not reach the scope. Tokens are looked up on
// every request, so a revoked one stops working at once.
func (s *Server) requireScope(scope auth.Scope) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, presented := requestToken(r)
			granted := auth.ScopeNone
			var expired *auth.ExpiredError
			if presented {
				var err error
				granted, err = s.tokens.Check(tok)
				if err != nil && !errors.As(err, &expired) {
					s.writeError(w, r, err)
					return
				}
			}
			if granted >= scope {
				next.ServeHTTP(w, r)
				return
			}
			status, msg := http.StatusUnauthorized, scope.String()+" access needs a token: HTTP Basic password (netrc-file) or Bearer"
			switch {
			case granted != auth.ScopeNone:
				status, msg = http.StatusForbidden, "token has "+granted.String()+" scope, this needs "+scope.String()
			case expired != nil:
				msg = expired.Error() + "; ask for a new one"
			case presented:
				msg = "token not accepted"
			}
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="cached"`)
			}
			s.log.Warn("access refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", status, "reason", msg)
			s.writeError(w, r, &statusError{status, msg})
		})
	}
}

// requireUpload guards every write.
func (s *Server) requireUpload(next http.Handler) http.Handler {
	return s.requireScope(auth.ScopeWrite)(next)
}
