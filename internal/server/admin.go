package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/gc"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/go-chi/chi/v5"
)

// The admin API under /_cached/ (admin scope): garbage collection, pins and tokens. The CLI
// (cached gc, cached pin, cached token) is its client; these run inside the server because only
// the server holds the index and the locks that keep a collection from racing uploads.

func (s *Server) adminRoutes(r chi.Router) {
	if s.cfg.Index == nil {
		return
	}
	r.Route("/_cached", func(r chi.Router) {
		r.Use(s.requireScope(auth.ScopeAdmin))
		r.Post("/gc", s.postGC)
		r.Post("/verify", s.postVerify)
		r.Get("/pins", s.listPins)
		r.Put("/pins/{pin}", s.putPin)
		r.Delete("/pins/{pin}", s.deletePin)
		r.Get("/tokens", s.listTokens)
		r.Post("/tokens", s.createToken)
		r.Delete("/tokens/{id}", s.revokeToken)
	})
}

// postGC runs a collection and streams its progress as text; the last line is "report: " and
// the JSON report. Query: older-than, max-size (bytes), keep-since, grace (Go durations or Nd),
// dry-run=1, pulled-only=1.
func (s *Server) postGC(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var p gc.Policy
	var err error
	for _, f := range []struct {
		key string
		dst *time.Duration
	}{{"older-than", &p.OlderThan}, {"keep-since", &p.KeepSince}, {"grace", &p.Grace}} {
		if v := q.Get(f.key); v != "" {
			if *f.dst, err = ParseDuration(v); err != nil {
				s.writeError(w, r, &cache.InputError{Field: f.key, Err: err})
				return
			}
		}
	}
	if v := q.Get("max-size"); v != "" {
		if p.MaxSize, err = strconv.ParseInt(v, 10, 64); err != nil || p.MaxSize <= 0 {
			s.writeError(w, r, &cache.InputError{Field: "max-size", Err: fmt.Errorf("%q is not a positive number of bytes", v)})
			return
		}
	}
	if q.Get("grace") == "" {
		p.Grace = time.Hour
	}
	p.DryRun = q.Get("dry-run") == "1" || q.Get("dry-run") == "true"
	p.PulledOnly = q.Get("pulled-only") == "1" || q.Get("pulled-only") == "true"
	// pulled-only alone: every pulled path that no uploaded path holds.
	p.ByAge = q.Get("older-than") != "" || p.PulledOnly && p.MaxSize == 0
	if !p.ByAge && p.MaxSize == 0 {
		s.writeError(w, r, &cache.InputError{Field: "policy", Err: errors.New("give older-than and/or max-size")})
		return
	}
	if !s.gcRunning.TryLock() {
		s.writeError(w, r, &statusError{http.StatusConflict, "a garbage collection is already running"})
		return
	}
	defer s.gcRunning.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	out := &flushWriter{w: w}
	rep, err := gc.Run(r.Context(), s.cache, s.cfg.Index, p, out)
	if err != nil {
		rep.Error = err.Error()
		fmt.Fprintf(out, "error: %v\n", err)
	}
	writeReport(out, rep)
	if !p.DryRun {
		s.Metrics().GCRun(rep.BytesFreed, rep.PathsDeleted, err)
	}
	s.log.Info("gc", "pathsDeleted", rep.PathsDeleted, "narsDeleted", rep.NarsDeleted, "bytesFreed", rep.BytesFreed, "failures", rep.Failures, "dryRun", rep.DryRun)
}

// flushWriter sends each progress line as it is written.
type flushWriter struct{ w http.ResponseWriter }

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	http.NewResponseController(f.w).Flush()
	return n, err
}

// pinKey turns a pin argument into its index key: a store path or hash pins that path; "name:X"
// pins every path whose name starts with X.
func pinKey(arg string) (string, error) {
	if name, ok := strings.CutPrefix(arg, "name:"); ok {
		if name == "" || strings.ContainsAny(name, "/ \n") {
			return "", fmt.Errorf("pin name prefix %q is not a store path name", name)
		}
		return "name:" + name, nil
	}
	if strings.HasPrefix(arg, "/") {
		_, hash, _, err := narinfo.ParseStorePath(arg)
		return hash, err
	}
	if narinfo.ValidHashPart(arg) {
		return arg, nil
	}
	if hash, _, err := narinfo.ParseBaseName(arg); err == nil {
		return hash, nil
	}
	return "", fmt.Errorf("%q is not a store path, hash or name:PREFIX", arg)
}

func (s *Server) putPin(w http.ResponseWriter, r *http.Request) {
	key, err := pinKey(urlParam(r, "pin"))
	if err != nil {
		s.writeError(w, r, &cache.InputError{Field: "pin", Err: err})
		return
	}
	if !strings.HasPrefix(key, "name:") {
		if ok, err := s.cache.HasNarInfo(r.Context(), key); err != nil {
			s.writeError(w, r, err) // the index or backend cannot answer: 503, retried
			return
		} else if !ok {
			s.writeError(w, r, &cache.InputError{Field: "pin", Err: fmt.Errorf("no store path with hash %s in the cache", key)})
			return
		}
	}
	if err := s.cfg.Index.Pin(key); err != nil {
		s.writeError(w, r, err)
		return
	}
	fmt.Fprintf(w, "pinned %s\n", key)
}

func (s *Server) deletePin(w http.ResponseWriter, r *http.Request) {
	key, err := pinKey(urlParam(r, "pin"))
	if err != nil {
		s.writeError(w, r, &cache.InputError{Field: "pin", Err: err})
		return
	}
	if err := s.cfg.Index.Unpin(key); errors.Is(err, index.ErrNotFound) {
		s.writeError(w, r, &statusError{http.StatusNotFound, "no such pin: " + key})
		return
	} else if err != nil {
		s.writeError(w, r, err)
		return
	}
	fmt.Fprintf(w, "unpinned %s\n", key)
}

func (s *Server) listPins(w http.ResponseWriter, r *http.Request) {
	type pin struct {
		Pin       string    `json:"pin"`
		StorePath string    `json:"storePath,omitempty"`
		Since     time.Time `json:"since"`
	}
	out := []pin{}
	err := s.cfg.Index.Pins(func(key string, since time.Time) {
		p := pin{Pin: key, Since: since.UTC()}
		if text, err := s.cache.NarInfo(r.Context(), key); err == nil {
			if ni, err := narinfo.Parse(text); err == nil {
				p.StorePath = ni.StorePath
			}
		}
		out = append(out, p)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, out)
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := s.tokens.List()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if toks == nil {
		toks = []auth.Token{}
	}
	writeJSON(w, toks)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string `json:"name"`
		Scope string `json:"scope"`
		// Expires is how long the token lasts (30d, 2w, 36h); empty: for ever.
		Expires string `json:"expires"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		s.writeError(w, r, &cache.InputError{Field: "body", Err: err})
		return
	}
	scope, err := auth.ParseScope(req.Scope)
	if err != nil {
		s.writeError(w, r, &cache.InputError{Field: "scope", Err: err})
		return
	}
	var expires time.Time
	if req.Expires != "" {
		d, err := ParseDuration(req.Expires)
		if err == nil && d <= 0 {
			err = fmt.Errorf("duration %q: a token must last longer than 0", req.Expires)
		}
		if err != nil {
			s.writeError(w, r, &cache.InputError{Field: "expires", Err: err})
			return
		}
		expires = time.Now().Add(d)
	}
	secret, tok, err := s.tokens.CreateExpiring(req.Name, scope, expires)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token created", "id", tok.ID, "name", tok.Name, "scope", tok.Scope, "expires", tok.Expires)
	writeJSON(w, struct {
		auth.Token
		Secret string `json:"secret"`
	}{tok, secret})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	tok, err := s.tokens.Revoke(urlParam(r, "id"))
	if errors.Is(err, auth.ErrNotFound) {
		s.writeError(w, r, &statusError{http.StatusNotFound, err.Error()})
		return
	}
	if err != nil {
		s.writeError(w, r, &cache.InputError{Field: "id", Err: err})
		return
	}
	s.log.Info("token revoked", "id", tok.ID, "name", tok.Name)
	writeJSON(w, tok)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ParseDuration accepts Go durations (90m, 36h) and days or weeks (30d, 2w).
func ParseDuration(s string) (time.Duration, error) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || !(v >= 0) { // !(v >= 0) also refuses NaN
				return 0, fmt.Errorf("duration %q: want e.g. 30d, 2w, 36h, 90m", s)
			}
			// A float past the largest Duration converts to a negative one: gc would take
			// "older than 999999d" for "older than a moment ago" and delete everything.
			f := v * float64(unit)
			if f >= math.MaxInt64 {
				return 0, fmt.Errorf("duration %q is too long: at most %dd", s, math.MaxInt64/int64(24*time.Hour))
			}
			return time.Duration(f), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want e.g. 30d, 2w, 36h, 90m", s)
	}
	return d, nil
}
