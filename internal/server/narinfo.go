package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cached-dev/cached/internal/cache"
)

// getTopLevel serves /<hash>.narinfo and /<hash>.ls.
func (s *Server) getTopLevel(w http.ResponseWriter, r *http.Request) {
	file := urlParam(r, "file")
	if hash, ok := strings.CutSuffix(file, ".narinfo"); ok {
		s.getNarInfo(w, r, hash)
		return
	}
	if hash, ok := strings.CutSuffix(file, ".ls"); ok {
		if !cache.ValidStoreHash(hash) {
			s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not a store path hash", hash)})
			return
		}
		s.serveObject(w, r, hash+".ls", "application/json", s.hdr.dayCache, "")
		return
	}
	s.writeError(w, r, cache.ErrNotFound)
}

// getNarInfo answers GET and HEAD /<hash>.narinfo through the router; the fast path answers
// most of them (fast.go). Both send narInfoAnswer.
func (s *Server) getNarInfo(w http.ResponseWriter, r *http.Request, hash string) {
	if !cache.ValidStoreHash(hash) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not a store path hash", hash)})
		return
	}
	var inm []byte
	if v := r.Header["If-None-Match"]; len(v) == 1 {
		inm = []byte(v[0])
	}
	var a answer
	if err := s.narInfoAnswer(r.Context(), &a, hash, s.mayPull(r), inm); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeAnswer(w, r, &a)
}

// narInfoAnswer makes a the answer to a GET or HEAD of /<hash>.narinfo, hash a valid store
// hash: the narinfo (from an upstream when mayPull and the cache lacks it), 304 Not Modified
// when ifNoneMatch (the request's one If-None-Match, or nil) is its ETag, 404 when there is
// none. An error is a lookup that failed (writeError's to answer).
func (s *Server) narInfoAnswer(ctx context.Context, a *answer, hash string, mayPull bool, ifNoneMatch []byte) error {
	text, pulled, err := s.lookupNarInfo(ctx, hash, mayPull)
	if errors.Is(err, cache.ErrNotFound) {
		s.notFoundAnswer(a)
		return nil
	}
	if err != nil {
		return err
	}
	*a = answer{status: http.StatusOK, contentType: hdrNarInfo, cacheControl: s.hdr.narInfoCache, text: text}
	if !pulled {
		a.touch = hash // a pulled narinfo is not in the index yet
	}
	narInfoETag(&a.etag, text)
	if ifNoneMatch != nil && bytes.Equal(ifNoneMatch, a.etag.bytes()) {
		a.status, a.text = http.StatusNotModified, nil
	}
	return nil
}

// narInfoETag sets e to a strong validator of a served narinfo: a hash of its text (which
// changes only if the path is collected and pushed again, signed differently).
func narInfoETag(e *etag, text []byte) {
	h := uint64(14695981039346656037) // FNV-1a, inline: hash/fnv's constructor allocates
	for _, c := range text {
		h = (h ^ uint64(c)) * 1099511628211
	}
	var b [16]byte
	e.set(string(strconv.AppendUint(b[:0], h, 36)))
}

// cacheHeaders are the Cache-Control values of what the server serves. A private cache's
// answers depend on the reader's token: shared caches (proxies, CDNs) must not keep them.
type cacheHeaders struct {
	narInfoCache  []string // a narinfo never changes once committed, but may be collected
	notFoundCache []string // a missing path may be uploaded soon
	narCache      []string // a NAR is named by its hash: immutable
	dayCache      string   // listings, logs, realisations
	cacheInfo     string
}

func newCacheHeaders(private bool) cacheHeaders {
	scope := "public"
	if private {
		scope = "private"
	}
	return cacheHeaders{
		narInfoCache:  []string{scope + ", max-age=3600"},
		notFoundCache: []string{scope + ", max-age=60"},
		narCache:      []string{scope + ", max-age=31536000, immutable"},
		dayCache:      scope + ", max-age=86400",
		cacheInfo:     scope + ", max-age=300",
	}
}

// putTopLevel accepts /<hash>.narinfo and /<hash>.ls.
func (s *Server) putTopLevel(w http.ResponseWriter, r *http.Request) {
	file := urlParam(r, "file")
	hash, isNarInfo := strings.CutSuffix(file, ".narinfo")
	lsHash, isLs := strings.CutSuffix(file, ".ls")
	if isLs {
		hash = lsHash
	}
	if (!isNarInfo && !isLs) || !cache.ValidStoreHash(hash) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not <store hash>.narinfo or <store hash>.ls", file)})
		return
	}
	body, err := s.readMeta(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if isLs {
		if !json.Valid(body) {
			s.writeError(w, r, &cache.InputError{Field: "body", Err: errorf("listing %s is not valid JSON", file)})
			return
		}
		if err := s.cache.PutFile(r.Context(), file, strings.NewReader(string(body))); err != nil {
			s.writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	stored, err := s.cache.PutNarInfo(r.Context(), hash, body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !stored {
		s.log.Info("narinfo already present, upload not stored", "hash", hash)
	}
	w.WriteHeader(http.StatusOK)
}
