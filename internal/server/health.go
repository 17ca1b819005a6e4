package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Probes for orchestrators and load balancers. /healthz says the process answers; /readyz says it
// can serve: the index answers a lookup and the backend a Stat. Both are cheap enough to poll
// every few seconds and are never cached.

// readyTimeout bounds the backend check: a hung bucket must read as not ready, not as a hung
// probe.
const readyTimeout = 5 * time.Second

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeProbe(w, http.StatusOK, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var failed []string
	if err := s.cache.PingIndex(); err != nil {
		s.log.Warn("not ready: index lookup failed", "req_id", requestID(r), "err", err)
		failed = append(failed, "index: lookup failed")
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if _, err := s.cache.Backend().Stat(ctx, "nix-cache-info"); err != nil {
		s.log.Warn("not ready: backend stat of nix-cache-info failed", "req_id", requestID(r), "err", err)
		failed = append(failed, "backend: stat nix-cache-info failed")
	}
	if len(failed) > 0 {
		// The details (paths, endpoints) are in the log, not in this unauthenticated answer.
		writeProbe(w, http.StatusServiceUnavailable, "not ready\n"+strings.Join(failed, "\n")+"\n")
		return
	}
	writeProbe(w, http.StatusOK, "ok\n")
}

func writeProbe(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(body))
}
