package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/cache"
)

// Pull-through (--upstream; package upstream): a narinfo or NAR the cache lacks is asked of the
// upstreams, for readers only. A request carrying a write token (nix copy --to checks what the
// cache has before uploading) is never answered from an upstream, so an upload is never skipped
// because the upstream has the path; on a --private cache an anonymous request never gets here.

// lookupNarInfo is the one answer to a narinfo lookup, the router's and the fast path's: the
// cache's narinfo, else, when mayPull, one pulled from an upstream (pulled true: it is not in the
// index yet).
func (s *Server) lookupNarInfo(ctx context.Context, hash string, mayPull bool) (text []byte, pulled bool, err error) {
	text, err = s.cache.NarInfo(ctx, hash)
	if !errors.Is(err, cache.ErrNotFound) || !mayPull || s.pull == nil {
		return text, false, err
	}
	text, err = s.pull.NarInfo(ctx, hash)
	return text, err == nil, err
}

// mayPull reports whether r may be answered from an upstream: pull-through is on and r carries
// no token with write scope.
func (s *Server) mayPull(r *http.Request) bool {
	if s.pull == nil {
		return false
	}
	tok, presented := requestToken(r)
	if !presented {
		return !s.cfg.Private
	}
	scope, err := s.tokens.Check(tok)
	return err == nil && scope >= auth.ScopeRead && scope < auth.ScopeWrite
}

// servePulledNar answers for the NAR of a pulled narinfo that is not stored yet: a HEAD at once,
// a GET by streaming the download (shared with every other client asking for it) while the
// cache stores and verifies it. It reports false, having written nothing, when name is no such
// NAR. A download that fails after the answer has begun cuts the connection: the client sees a
// short body, never a complete wrong one.
func (s *Server) servePulledNar(w http.ResponseWriter, r *http.Request, name, fileHash string) bool {
	if !s.mayPull(r) {
		return false
	}
	h := w.Header()
	if r.Method == http.MethodHead {
		size, ok := s.pull.PendingNar(name)
		if !ok {
			return false
		}
		s.pulledNarHeaders(h, size, fileHash)
		w.WriteHeader(http.StatusOK)
		return true
	}
	rc, size, err := s.pull.OpenNar(r.Context(), name)
	if errors.Is(err, cache.ErrNotFound) {
		// Stored in the meantime, by the download that has just ended.
		s.serveObject(w, r, name, "application/x-nix-nar", s.hdr.narCache[0], fileHash)
		return true
	}
	if err != nil {
		s.writeError(w, r, err)
		return true
	}
	defer rc.Close()
	s.pulledNarHeaders(h, size, fileHash)
	w.WriteHeader(http.StatusOK)
	if err := copyFlushing(w, rc); err != nil {
		setErr(r, err)
		if r.Context().Err() == nil {
			s.log.Warn("pulled NAR failed while streaming; connection cut", "nar", name, "req_id", requestID(r), "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return true
}

func (s *Server) pulledNarHeaders(h http.Header, size int64, fileHash string) {
	h.Set("Content-Type", "application/x-nix-nar")
	h["Cache-Control"] = s.hdr.narCache
	h.Set("ETag", `"`+fileHash+`"`)
	if size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
}

// copyFlushing copies r to w, flushing what it writes: the bytes of a NAR being pulled reach
// the client as they arrive, not when a buffer fills.
func copyFlushing(w http.ResponseWriter, r io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if ferr := rc.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
