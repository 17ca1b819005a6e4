package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/cache"
)

// getNar serves /nar/<filehash>.nar[.ext], the names cached's narinfos give, and the NAR URLs of
// servers that serve a Nix store directly (nix-serve's /nar/<store hash>-<NarHash>.nar,
// harmonia's /nar/<NarHash>.nar?hash=<store hash>), which clients that read those servers'
// narinfos ask for (storenar.go). Any other query is ignored, as a static file server would.
func (s *Server) getNar(w http.ResponseWriter, r *http.Request) {
	name := "nar/" + urlParam(r, "file")
	nn, err := cache.ParseNarName(name)
	if err != nil {
		ref, serr := cache.ParseStoreNarName(name)
		if serr != nil {
			if strings.IndexByte(name[4:], '-') >= 0 {
				err = serr // it looks like nix-serve's form: say what is wrong with that
			}
			s.writeError(w, r, &cache.InputError{Field: "path", Err: err})
			return
		}
		s.serveStoreNar(w, r, ref)
		return
	}
	var a answer
	err = s.narAnswer(r.Context(), &a, name, nn.FileHash, r.Method == http.MethodGet, requestID(r))
	q, hasQuery := queryValues(r)["hash"]
	switch {
	case err == nil:
		s.writeAnswer(w, r, &a)
	case !errors.Is(err, cache.ErrNotFound):
		s.writeError(w, r, err)
	case hasQuery && nn.Compression == "none":
		// harmonia's form, for when the NAR is not stored under that very name (then the query
		// changes nothing).
		ref, qerr := cache.ParseStoreNarQuery(name, q[0])
		if qerr != nil {
			s.writeError(w, r, &cache.InputError{Field: "query", Err: qerr})
			return
		}
		s.serveStoreNar(w, r, ref) // it records the download of what it sends
	case s.serveUploadedName(w, r, name) || s.servePulledNar(w, r, name, nn.FileHash):
		if r.Method == http.MethodGet {
			s.cache.Touch(name) // a download keeps the paths using this NAR alive for gc
		}
	default:
		s.notFound(w)
	}
}

// narAnswer makes a the answer to a GET (get) or HEAD of the NAR stored as name, whose file hash
// is fileHash: a redirect (redirect.go), else the object, with the file hash as its ETag. The
// file hash names the content, so it is the strongest, stablest ETag there is: a resumed
// download (Range) sees the same one. cache.ErrNotFound: no NAR is stored as name. id is the
// request's, for the log.
func (s *Server) narAnswer(ctx context.Context, a *answer, name, fileHash string, get bool, id string) error {
	if !s.redirectAnswer(ctx, a, name, id) {
		if err := s.objectAnswer(ctx, a, name, hdrNar, s.hdr.narCache); err != nil {
			return err
		}
		a.etag.set(fileHash)
	}
	if get {
		a.touch = name // a download keeps the paths using this NAR alive for gc
	}
	return nil
}

// serveStoreNar answers a NAR URL that names a store path (nix-serve's and harmonia's): the NAR
// of that path, uncompressed, as those servers send it and as the narinfos they wrote say
// ("Compression: none"). A NAR stored compressed is decompressed on the fly, without Range (its
// Content-Length is the NarSize, and the client checks the NarHash). A path the cache does not
// have, or has with another NarHash than the URL names, is a 404 that says which.
func (s *Server) serveStoreNar(w http.ResponseWriter, r *http.Request, ref cache.StoreNarRef) {
	n, err := s.cache.OpenStoreNar(r.Context(), ref)
	var mismatch *cache.NarHashMismatchError
	switch {
	case errors.As(err, &mismatch):
		s.notFoundBecause(w, mismatch.Error())
		return
	case errors.Is(err, cache.ErrNotFound):
		s.notFoundBecause(w, "store path "+ref.StoreHash+" is not in this cache")
		return
	case err != nil:
		s.writeError(w, r, err)
		return
	}
	defer n.Close()
	if r.Method == http.MethodGet {
		s.cache.Touch(n.Stored) // a download keeps the paths using this NAR alive for gc
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-nix-nar")
	if ref.NarHash != "" {
		h["Cache-Control"] = s.hdr.narCache
	} else { // named by the store path alone: a path uploaded again has another NAR
		h["Cache-Control"] = s.hdr.narInfoCache
	}
	// The NarHash names what is sent whichever way it is stored.
	etag := `"` + strings.TrimPrefix(n.NarHash, "sha256:") + `"`
	if n.Object != nil {
		h.Set("ETag", etag)
		if rh := r.Header.Get("Range"); rh != "" { // the Range policy (ranges.go)
			if rh, ok := simplifyRange(rh, n.Size); ok {
				r.Header.Set("Range", rh)
			} else {
				r.Header.Del("Range")
			}
		}
		var content io.ReadSeeker = n.Object
		if f, ok := n.Object.(backend.LocalFile); ok {
			content = f.OSFile()
		}
		http.ServeContent(w, r, "", n.Object.Info().ModTime, content)
		return
	}
	// Streamed: no Accept-Ranges, so no client resumes it with a Range it could not have.
	h.Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.FormatInt(n.Size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, n.Body); err != nil {
		// Headers are gone: only a broken connection tells the client that the body is short.
		s.log.Warn("decompressing a NAR for its store path URL failed", "path", r.URL.Path, "stored", n.Stored, "req_id", requestID(r), "err", err)
		panic(http.ErrAbortHandler)
	}
}

// notFoundBecause is notFound with a body that says why.
func (s *Server) notFoundBecause(w http.ResponseWriter, why string) {
	h := w.Header()
	h["Content-Type"] = hdrTextPlain
	h["Cache-Control"] = s.hdr.notFoundCache
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, why+"\n")
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
	if _, err := s.cache.UploadStored(r.Context(), name); errors.Is(err, cache.ErrNotFound) {
		return false
	} else if err != nil {
		s.writeError(w, r, err) // the index or backend cannot answer: 503, not a 404
		return true
	}
	if r.Method == http.MethodHead {
		s.uploadedNameHeaders(w)
		w.WriteHeader(http.StatusOK)
		return true
	}
	if tok, presented := requestToken(r); !presented {
		s.refuseRecompression(w, r, name, "no token")
		return true
	} else if scope, err := s.tokens.Check(tok); err != nil && !errors.As(err, new(*auth.ExpiredError)) {
		s.writeError(w, r, err) // the token store cannot answer: 503, retried
		return true
	} else if scope < auth.ScopeRead {
		reason := "token not accepted"
		if err != nil {
			reason = err.Error() // expired: a 401 too, and it says so
		}
		s.refuseRecompression(w, r, name, reason)
		return true
	}
	rc, err := s.cache.OpenUploaded(r.Context(), name)
	if errors.Is(err, cache.ErrNotFound) {
		return false
	} else if err != nil {
		s.writeError(w, r, err)
		return true
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
	s.writeError(w, r, &statusError{http.StatusUnauthorized, reason + ": " + name + " is how it was uploaded; it is recompressed for token holders only (the uploader's netrc). The narinfo served here names the stored NAR."})
}

func (s *Server) uploadedNameHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/x-nix-nar")
	h.Set("Cache-Control", "no-cache")
}

// objectAnswer makes a the answer that sends the stored object name whole, with
// Content-Length, Range and conditional requests handled by http.ServeContent (and a disk
// object through sendfile). No Content-Encoding is ever set: the client decompresses per the
// narinfo. cache.ErrNotFound: there is no such object.
func (s *Server) objectAnswer(ctx context.Context, a *answer, name string, contentType, cacheControl []string) error {
	obj, err := s.cache.Open(ctx, name)
	if err != nil {
		return err
	}
	*a = answer{status: http.StatusOK, contentType: contentType, cacheControl: cacheControl, obj: obj}
	return nil
}

// serveObject sends a stored object (objectAnswer), or a 404, with tag (if not empty) as its
// ETag, quoted.
func (s *Server) serveObject(w http.ResponseWriter, r *http.Request, name, contentType, cacheControl, tag string) {
	var a answer
	err := s.objectAnswer(r.Context(), &a, name, []string{contentType}, []string{cacheControl})
	switch {
	case errors.Is(err, cache.ErrNotFound):
		s.notFound(w)
	case err != nil:
		s.writeError(w, r, err)
	default:
		if tag != "" {
			a.etag.set(tag)
		}
		s.writeAnswer(w, r, &a)
	}
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

// queryValues is r's query, parsed only when there is one (most requests have none).
func queryValues(r *http.Request) url.Values {
	if r.URL.RawQuery == "" {
		return nil
	}
	return r.URL.Query()
}
