package server

import (
	"context"
	"net/http"
)

// NarRedirect sends NAR downloads elsewhere: GETs of a stored NAR are answered with a 307 to
// the URL it gives, so that the bytes never pass through cached (a presigned S3 URL, or a CDN
// in front of the bucket). Narinfos, the uploaded-name and store-path URL forms, and NARs not
// (yet) in the index, such as pulled ones being stored, are still served directly.
type NarRedirect struct {
	// URL returns where the NAR stored as name (nar/<filehash>.nar.<ext>) can be fetched.
	URL func(ctx context.Context, name string) (string, error)
	// CacheControl of the 307: "no-store" for URLs that expire; empty: as the NAR itself.
	CacheControl string
}

// redirectNar answers a GET or HEAD of the NAR stored as name with a redirect, and reports
// whether it did. Without a redirect, for a NAR the index does not hold, or when no URL can be
// made (logged), it writes nothing and the NAR is served directly.
func (s *Server) redirectNar(w http.ResponseWriter, r *http.Request, name string) bool {
	rd := s.cfg.NarRedirect
	if rd == nil || !s.cache.NarIndexed(name) {
		return false
	}
	u, err := rd.URL(r.Context(), name)
	if err != nil {
		s.log.Warn("no redirect URL for a NAR; serving it directly", "nar", name, "req_id", requestID(r), "err", err)
		return false
	}
	h := w.Header()
	h.Set("Location", u)
	if rd.CacheControl != "" {
		h.Set("Cache-Control", rd.CacheControl)
	} else {
		h.Set("Cache-Control", s.hdr.narCache)
	}
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}
