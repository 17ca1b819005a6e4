package server

import (
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

func (s *Server) getNarInfo(w http.ResponseWriter, r *http.Request, hash string) {
	if !cache.ValidStoreHash(hash) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not a store path hash", hash)})
		return
	}
	// HEAD takes the same path, so it carries the same headers (Content-Length included);
	// net/http drops the body.
	h := w.Header()
	text, pulled, err := s.lookupNarInfo(r.Context(), hash, s.mayPull(r))
	if errors.Is(err, cache.ErrNotFound) {
		s.notFound(w)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !pulled {
		s.cache.Touch(hash)
	}
	etag := narInfoETag(text)
	h["Content-Type"] = hdrNarInfo
	h["Cache-Control"] = s.hdr.narInfoCache
	h["Etag"] = []string{etag}
	if inm := r.Header["If-None-Match"]; len(inm) == 1 && inm[0] == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Length"] = []string{strconv.Itoa(len(text))}
	w.Write(text)
}

// narInfoETag is a strong validator of a served narinfo: a hash of its text (which changes only
// if the path is collected and pushed again, signed differently).
func narInfoETag(text []byte) string {
	h := uint64(14695981039346656037) // FNV-1a, inline: hash/fnv's constructor allocates
	for _, c := range text {
		h = (h ^ uint64(c)) * 1099511628211
	}
	var b [16]byte
	b[0] = '"'
	out := strconv.AppendUint(b[:1], h, 36)
	return string(append(out, '"'))
}

// notFound is the cheap, common answer to a substituter asking for a path we lack. It is cached
// only briefly: the path may be uploaded soon.
func (s *Server) notFound(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = hdrTextPlain
	h["Cache-Control"] = s.hdr.notFoundCache
	h["Content-Length"] = hdrNotFoundLen
	w.WriteHeader(http.StatusNotFound)
	w.Write(notFoundBody)
}

// Header values shared by every response on the narinfo path: net/http only reads them, and
// assigning a ready slice saves an allocation per header per request.
var (
	hdrTextPlain   = []string{"text/plain; charset=utf-8"}
	hdrNotFoundLen = []string{"10"}
	hdrNarInfo     = []string{"text/x-nix-narinfo"}
	notFoundBody   = []byte("not found\n")
)

// cacheHeaders are the Cache-Control values of what the server serves. A private cache's
// answers depend on the reader's token: shared caches (proxies, CDNs) must not keep them.
type cacheHeaders struct {
	narInfoCache  []string // a narinfo never changes once committed, but may be collected
	notFoundCache []string // a missing path may be uploaded soon
	narCache      string   // a NAR is named by its hash: immutable
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
		narCache:      scope + ", max-age=31536000, immutable",
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
