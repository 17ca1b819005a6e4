package server

import (
	"io"
	"net/http"
	"os"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/cache"
)

func (s *Server) getNar(w http.ResponseWriter, r *http.Request) {
	name := "nar/" + urlParam(r, "file")
	nn, err := cache.ParseNarName(name)
	if err != nil {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: err})
		return
	}
	// The file hash names the content, so it is the strongest, stablest ETag there is: a resumed
	// download (Range) sees the same one.
	etag := `"` + nn.FileHash + `"`
	found := s.serveObjectOr(w, r, name, "application/x-nix-nar", s.hdr.narCache, etag, func() bool {
		return s.serveUploadedName(w, r, name) || s.servePulledNar(w, r, name, etag)
	})
	if found && r.Method == http.MethodGet {
		s.cache.Touch(name) // a download keeps the paths using this NAR alive for gc
	}
}

// serveUploadedName answers for a NAR uploaded in one compression and stored in another. nix
// HEADs it before uploading, and need not send it again. A GET comes only from a client that kept
// the narinfo it uploaded (nix caches it on the uploading machine): it gets the NAR in the
// compression it expects, recompressed on the fly, without Range (the bytes differ from the
// upload; the NarHash it checks does not). It reports false, having written nothing, when name is
// no such upload.
//
// Recompressing costs seconds of CPU per megabyte for xz, and a few requests would take every
// recompression slot, so the GET is answered only with a valid token (any scope): the uploader
// has one, and nix sends its netrc credentials on every request to the host, downloads
// included. Anyone else gets 401; the narinfos the cache serves name the stored NAR.
func (s *Server) serveUploadedName(w http.ResponseWriter, r *http.Request, name string) bool {
	if _, ok := s.cache.UploadStored(r.Context(), name); !ok {
		return false
	}
	if r.Method == http.MethodHead {
		s.uploadedNameHeaders(w)
		w.WriteHeader(http.StatusOK)
		return true
	}
	if tok, presented := requestToken(r); !presented {
		s.refuseRecompression(w, r, name, "no token")
		return true
	} else if scope, err := s.tokens.Check(tok); err != nil {
		s.writeError(w, r, err)
		return true
	} else if scope < auth.ScopeRead {
		s.refuseRecompression(w, r, name, "token not accepted")
		return true
	}
	rc, err := s.cache.OpenUploaded(r.Context(), name)
	if err != nil {
		return false
	}
	defer rc.Close()
	s.uploadedNameHeaders(w)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		// Headers are gone: only a broken connection tells the client that the body is short.
		s.log.Warn("recompressing a NAR for its uploaded name failed", "nar", name, "req_id", requestID(r), "err", err)
		panic(http.ErrAbortHandler)
	}
	return true
}

// refuseRecompression answers a GET of an uploaded NAR name without a valid token.
func (s *Server) refuseRecompression(w http.ResponseWriter, r *http.Request, name, reason string) {
	s.log.Info("refused to recompress a NAR for its uploaded name: no valid token", "nar", name, "remote", r.RemoteAddr, "reason", reason)
	w.Header().Set("WWW-Authenticate", `Basic realm="cached"`)
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, name+" is how it was uploaded; it is recompressed for token holders only (the uploader's netrc). The narinfo served here names the stored NAR.", http.StatusUnauthorized)
}

func (s *Server) uploadedNameHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/x-nix-nar")
	h.Set("Cache-Control", "no-cache")
}

// serveObject sends a stored object with Content-Length, Range and conditional requests handled
// by http.ServeContent. A disk object is handed over as its *os.File so that the kernel copies it
// (sendfile). No Content-Encoding is ever set: the client decompresses per the narinfo.
// It reports whether the object was found.
func (s *Server) serveObject(w http.ResponseWriter, r *http.Request, name, contentType, cacheControl, etag string) bool {
	return s.serveObjectOr(w, r, name, contentType, cacheControl, etag, nil)
}

// serveObjectOr is serveObject that, when the object is missing, first asks orElse (if not nil)
// to answer, and writes the 404 only if orElse reports false.
func (s *Server) serveObjectOr(w http.ResponseWriter, r *http.Request, name, contentType, cacheControl, etag string, orElse func() bool) bool {
	obj, err := s.cache.Open(r.Context(), name)
	if err == cache.ErrNotFound {
		if orElse != nil && orElse() {
			return true
		}
		s.notFound(w)
		return false
	}
	if err != nil {
		s.writeError(w, r, err)
		return false
	}
	defer obj.Close()
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", cacheControl)
	if etag != "" {
		h.Set("ETag", etag)
	}
	var content io.ReadSeeker = obj
	if f, ok := obj.(interface{ OSFile() *os.File }); ok {
		content = f.OSFile()
	}
	if rh := r.Header.Get("Range"); rh != "" { // the Range policy (ranges.go)
		if rh, ok := simplifyRange(rh, obj.Info().Size); ok {
			r.Header.Set("Range", rh)
		} else {
			r.Header.Del("Range")
		}
	}
	http.ServeContent(w, r, "", obj.Info().ModTime, content)
	return true
}

func (s *Server) putNar(w http.ResponseWriter, r *http.Request) {
	name := "nar/" + urlParam(r, "file")
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadSize)
	rec, err := s.cache.PutNar(r.Context(), name, body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Debug("nar stored", "nar", name, "narHash", rec.NarHash, "narSize", rec.NarSize, "fileSize", rec.FileSize)
	w.WriteHeader(http.StatusOK)
}
