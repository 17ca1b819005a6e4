package server

import (
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cached-dev/cached/internal/cache"
)

func (s *Server) cacheInfo() string {
	return cache.CacheInfo(s.cfg.Priority)
}

func (s *Server) getCacheInfo(w http.ResponseWriter, r *http.Request) {
	body := s.cacheInfo()
	w.Header().Set("Content-Type", "text/x-nix-cache-info")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", s.hdr.cacheInfo)
	io.WriteString(w, body)
}

// putCacheInfo accepts what `nix copy` sends when it believes the cache is new. The server owns
// nix-cache-info, so the body is only checked for a StoreDir we cannot serve.
func (s *Server) putCacheInfo(w http.ResponseWriter, r *http.Request) {
	body, err := s.readMeta(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "StoreDir: "); ok && v != "/nix/store" {
			s.writeError(w, r, &cache.InputError{Field: "StoreDir", Err: errorf("%q is not /nix/store", v)})
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}
