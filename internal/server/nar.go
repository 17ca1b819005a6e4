package server

import (
	"io"
	"net/http"
	"os"

	"github.com/cached-dev/cached/internal/cache"
)

func (s *Server) getNar(w http.ResponseWriter, r *http.Request) {
	name := "nar/" + urlParam(r, "file")
	nn, err := cache.ParseNarName(name)
	if err != nil {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: err})
		return
	}
	// A NAR uploaded in one compression and stored in another. nix HEADs it before uploading,
	// and need not send it again. A GET comes only from a client that kept the narinfo it
	// uploaded (nix caches it on the uploading machine): it gets the NAR in the compression it
	// expects, recompressed on the fly, without Range (the bytes differ from the upload; the
	// NarHash it checks does not).
	if ok, err := s.cache.HasNar(r.Context(), name); err == nil && !ok {
		if _, ok := s.cache.UploadStored(r.Context(), name); ok {
			h := w.Header()
			h.Set("Content-Type", "application/x-nix-nar")
			h.Set("Cache-Control", "no-cache")
			if r.Method == http.MethodHead {
				w.WriteHeader(http.StatusOK)
				return
			}
			if rc, err := s.cache.OpenUploaded(r.Context(), name); err == nil {
				defer rc.Close()
				w.WriteHeader(http.StatusOK)
				io.Copy(w, rc)
				return
			}
		}
	}
	// The file hash names the content, so it is the strongest, stablest ETag there is: a resumed
	// download (Range) sees the same one.
	if s.serveObject(w, r, name, "application/x-nix-nar", "public, max-age=31536000, immutable", `"`+nn.FileHash+`"`) && r.Method == http.MethodGet {
		s.cache.Touch(name) // a download keeps the paths using this NAR alive for gc
	}
}

// serveObject sends a stored object with Content-Length, Range and conditional requests handled
// by http.ServeContent. A disk object is handed over as its *os.File so that the kernel copies it
// (sendfile). No Content-Encoding is ever set: the client decompresses per the narinfo.
// It reports whether the object was found.
func (s *Server) serveObject(w http.ResponseWriter, r *http.Request, name, contentType, cacheControl, etag string) bool {
	obj, err := s.cache.Open(r.Context(), name)
	if err == cache.ErrNotFound {
		notFound(w)
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
