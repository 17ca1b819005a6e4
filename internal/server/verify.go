package server

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/verify"
)

// postVerify checks the cache (verify.Run) and streams its findings as text; the last line is
// "report: " and the JSON report, with "error" set if the run could not finish. Query: sample
// (0 < f <= 1, default 1), grace (Go duration or Nd, default 1h), jobs (default 4),
// quarantine=1.
func (s *Server) postVerify(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := verify.Options{Sample: 1, Grace: time.Hour, Jobs: 4}
	if v := q.Get("sample"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f <= 1) {
			s.writeError(w, r, &cache.InputError{Field: "sample", Err: fmt.Errorf("%q is not a fraction 0 < f <= 1", v)})
			return
		}
		opts.Sample = f
	}
	if v := q.Get("grace"); v != "" {
		d, err := ParseDuration(v)
		if err != nil {
			s.writeError(w, r, &cache.InputError{Field: "grace", Err: err})
			return
		}
		opts.Grace = d
	}
	if v := q.Get("jobs"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			s.writeError(w, r, &cache.InputError{Field: "jobs", Err: fmt.Errorf("%q is not a number from 1 to 64", v)})
			return
		}
		opts.Jobs = n
	}
	opts.Quarantine = q.Get("quarantine") == "1" || q.Get("quarantine") == "true"
	if !s.verifyRunning.TryLock() {
		s.writeError(w, r, &statusError{http.StatusConflict, "a verification is already running"})
		return
	}
	defer s.verifyRunning.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	out := &flushWriter{w: w}
	rep, err := verify.Run(r.Context(), s.cache, s.cfg.Index, opts, out)
	final := struct {
		verify.Report
		Error string `json:"error,omitempty"`
	}{Report: rep}
	if err != nil {
		final.Error = err.Error()
		fmt.Fprintf(out, "error: %v\n", err)
	}
	writeReport(out, final)
	s.log.Info("verify", "problems", rep.Problems, "corrupt", rep.Corrupt, "missing", rep.Missing, "orphans", rep.Orphans,
		"narsHashed", rep.NarsHashed, "quarantined", rep.Quarantined, "narInfosDeleted", rep.NarInfosDeleted, "failures", rep.Failures, "err", err)
}
