package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-chi/httprate"
)

// Request limits beyond the body size caps: a body that stops arriving, and too many writes from
// one client.

// idleBody fails a request body that sends nothing for idle, so that a stalled or hostile
// uploader (slowloris) cannot hold a connection and a staged upload for ever. The deadline
// moves with every read, so a large upload at any steady rate is fine.
type idleBody struct {
	rc   *http.ResponseController
	r    interface{ Read([]byte) (int, error) }
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return n, &stalledError{b.idle}
	}
	return n, err
}

func (b *idleBody) Close() error { return nil }

type stalledError struct{ idle time.Duration }

func (e *stalledError) Error() string {
	return "upload body stalled: nothing received for " + e.idle.String()
}

// guardWrites applies the body idle timeout and the per-client write rate limit to requests
// that carry a body.
func (s *Server) guardWrites(next http.Handler) http.Handler {
	limited := next
	if s.cfg.WriteRateLimit > 0 {
		limited = httprate.LimitBy(s.cfg.WriteRateLimit, time.Minute, writerKey,
			httprate.WithLimitHandler(func(w http.ResponseWriter, r *http.Request) {
				s.log.Warn("write rate limit", "remote", r.RemoteAddr, "path", r.URL.Path)
				w.Header().Set("Retry-After", "10")
				s.writeError(w, r, &statusError{http.StatusTooManyRequests, "too many uploads from this client; retry later"})
			}))(next)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut && r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		if s.cfg.BodyIdleTimeout > 0 {
			r.Body = &idleBody{rc: http.NewResponseController(w), r: r.Body, idle: s.cfg.BodyIdleTimeout}
		}
		limited.ServeHTTP(w, r)
	})
}

// writerKey counts writes per token (hashed, never kept in clear), or per IP without one.
func writerKey(r *http.Request) (string, error) {
	if tok, ok := requestToken(r); ok {
		d := sha256.Sum256([]byte(tok))
		return "t:" + hex.EncodeToString(d[:8]), nil
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host, nil
}
