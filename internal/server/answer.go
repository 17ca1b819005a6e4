package server

import (
	"io"
	"net/http"
	"strconv"

	"github.com/cached-dev/cached/internal/backend"
)

// An answer is the server's answer to a GET or HEAD of a narinfo or a NAR: its status, the
// headers it decides and its body. narInfoAnswer (narinfo.go) and narAnswer (nar.go) make it,
// the one place each where those are decided; two writers send it as it is: writeAnswer below,
// through net/http, for the router's handlers, and appendHead (fast.go) with package fastpath,
// which writes the same bytes on the socket itself. A writer adds only what HTTP adds to any
// answer: Content-Length, what http.ServeContent adds for an object (Accept-Ranges,
// Last-Modified, and Range and conditional requests), X-Request-Id and Date.
type answer struct {
	status int
	// contentType and cacheControl hold one value each, as a slice that net/http's header map
	// takes as it is (one allocation fewer per header per request); nil: no such header.
	contentType  []string
	cacheControl []string
	etag         etag
	location     string // a redirect's target (the router's only: see fastHandler.Answer)
	text         []byte // the body, held in memory
	// obj is the body, whole, when it is a stored object (a NAR): http.ServeContent sends it,
	// the fast path sends a local file with sendfile. The writer closes it.
	obj backend.Object
	// touch is what a GET or HEAD of this renews for garbage collection (a store hash, a NAR
	// name); "": nothing.
	touch string
}

// etag is an ETag header value, quotes included, kept in the answer: a NAR's is a file hash
// (52 characters), a narinfo's a hash of its text. The fast path writes it without making a
// string of it.
type etag struct {
	b [64]byte
	n int
}

func (e *etag) bytes() []byte { return e.b[:e.n] }

// set makes the ETag "<tag>".
func (e *etag) set(tag string) {
	e.b[0] = '"'
	e.n = 1 + copy(e.b[1:len(e.b)-1], tag)
	e.b[e.n] = '"'
	e.n++
}

// reset empties a for the next answer; it keeps nothing of the last one.
func (a *answer) reset() { *a = answer{} }

// writeAnswer sends a through net/http, and closes its object. r is the request it answers:
// its Range and conditional headers apply to an object (http.ServeContent).
func (s *Server) writeAnswer(w http.ResponseWriter, r *http.Request, a *answer) {
	h := w.Header()
	if a.contentType != nil {
		h["Content-Type"] = a.contentType
	}
	if a.cacheControl != nil {
		h["Cache-Control"] = a.cacheControl
	}
	if a.etag.n > 0 {
		h["Etag"] = []string{string(a.etag.bytes())}
	}
	if a.location != "" {
		h["Location"] = []string{a.location}
	}
	switch {
	case a.obj != nil:
		defer a.obj.Close()
		info := a.obj.Info()
		if rh := r.Header.Get("Range"); rh != "" { // the Range policy (ranges.go)
			if rh, ok := simplifyRange(rh, info.Size); ok {
				r.Header.Set("Range", rh)
			} else {
				r.Header.Del("Range")
			}
		}
		var content io.ReadSeeker = a.obj
		if f, ok := a.obj.(backend.LocalFile); ok {
			content = f.OSFile() // so that the kernel copies it (sendfile)
		}
		http.ServeContent(w, r, "", info.ModTime, content)
	case a.text != nil:
		// HEAD takes this path too, so it carries the same headers (Content-Length included);
		// net/http drops the body.
		h["Content-Length"] = contentLength(len(a.text))
		w.WriteHeader(a.status)
		w.Write(a.text)
	default:
		w.WriteHeader(a.status)
	}
	if a.touch != "" {
		s.cache.Touch(a.touch)
	}
}

// contentLength is n as a Content-Length value; a miss's, the most common answer, is made once.
func contentLength(n int) []string {
	if n == len(notFoundBody) {
		return hdrNotFoundLen
	}
	return []string{strconv.Itoa(n)}
}

// Header values shared by every answer on the narinfo path: net/http only reads them, and
// assigning a ready slice saves an allocation per header per request.
var (
	hdrTextPlain   = []string{"text/plain; charset=utf-8"}
	hdrNotFoundLen = []string{"10"}
	hdrNarInfo     = []string{"text/x-nix-narinfo"}
	hdrNar         = []string{"application/x-nix-nar"}
	notFoundBody   = []byte("not found\n")
)

// notFoundAnswer is the cheap, common answer to a substituter asking for a path we lack. It is
// cached only briefly: the path may be uploaded soon.
func (s *Server) notFoundAnswer(a *answer) {
	*a = answer{status: http.StatusNotFound, contentType: hdrTextPlain, cacheControl: s.hdr.notFoundCache, text: notFoundBody}
}

// notFound writes notFoundAnswer.
func (s *Server) notFound(w http.ResponseWriter) {
	var a answer
	s.notFoundAnswer(&a)
	s.writeAnswer(w, nil, &a)
}
