package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/cached-dev/cached/internal/cache"
)

// POST /_cached/exists (write scope): which of a list of store path hashes the cache has a
// narinfo for, in one round trip, so that an uploader (cached push) learns what to skip without a
// HEAD per path. Any uploader may ask: it only tells what a HEAD per path would.
//
//	request:  {"hashes": ["<32-char store hash>", ...]}   at most maxExistsHashes
//	answer:   {"present": ["<hash>", ...]}                 in request order, each once
//
// A server without this endpoint answers 404 or 405, and clients fall back to HEADs.

// maxExistsHashes bounds one request; a client splits longer lists.
const maxExistsHashes = 10000

// maxExistsBody is the largest request body: maxExistsHashes quoted hashes with room to spare.
const maxExistsBody = 1 << 20

type existsRequest struct {
	Hashes []string `json:"hashes"`
}

type existsAnswer struct {
	Present []string `json:"present"`
}

// parseExistsRequest reads and checks a request body: every hash is a store path hash.
func parseExistsRequest(body []byte) ([]string, error) {
	var req existsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &cache.InputError{Field: "body", Err: errorf("want {\"hashes\": [...]}: %v", err)}
	}
	if req.Hashes == nil {
		return nil, &cache.InputError{Field: "hashes", Err: errors.New("missing")}
	}
	if len(req.Hashes) > maxExistsHashes {
		return nil, &cache.InputError{Field: "hashes", Err: errorf("%d hashes, at most %d per request", len(req.Hashes), maxExistsHashes)}
	}
	for _, h := range req.Hashes {
		if !cache.ValidStoreHash(h) {
			return nil, &cache.InputError{Field: "hashes", Err: errorf("%q is not a store path hash", h)}
		}
	}
	return req.Hashes, nil
}

func (s *Server) postExists(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxExistsBody))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	hashes, err := parseExistsRequest(body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	has := make([]bool, len(hashes))
	errs := make([]error, len(hashes))
	// Lookups are index reads, but a replica reading through to a shared backend may make a
	// backend request for each miss: a few run at once.
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(8, len(hashes)) {
		wg.Go(func() {
			for i := range next {
				has[i], errs[i] = s.cache.HasNarInfo(r.Context(), hashes[i])
			}
		})
	}
	for i := range hashes {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// Never "absent" for a lookup that failed: the uploader would send it again.
		s.writeError(w, r, err)
		return
	}
	ans := existsAnswer{Present: []string{}}
	seen := make(map[string]bool, len(hashes))
	for i, h := range hashes {
		if has[i] && !seen[h] {
			seen[h] = true
			ans.Present = append(ans.Present, h)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(ans)
}
