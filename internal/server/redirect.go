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

// redirectAnswer makes a the redirect that answers a GET or HEAD of the NAR stored as name, and
// reports whether it did. Without a redirect, for a NAR the index does not hold, or when no URL
// can be made (logged, with the request's id), it leaves a as it is and the NAR is served
// directly.
func (s *Server) redirectAnswer(ctx context.Context, a *answer, name, id string) bool {
	rd := s.cfg.NarRedirect
	if rd == nil || !s.cache.NarIndexed(name) {
		return false
	}
	u, err := rd.URL(ctx, name)
	if err != nil {
		s.log.Warn("no redirect URL for a NAR; serving it directly", "nar", name, "req_id", id, "err", err)
		return false
	}
	*a = answer{status: http.StatusTemporaryRedirect, cacheControl: s.hdr.narCache, location: u}
	if rd.CacheControl != "" {
		a.cacheControl = []string{rd.CacheControl}
	}
	return true
}
