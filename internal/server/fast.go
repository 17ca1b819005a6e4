package server

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/server/fastpath"
)

// The fast path (package fastpath) reads the commonest requests, narinfo and NAR GETs and HEADs,
// off the connection itself; fastHandler answers them with the answer the router sends
// (narInfoAnswer, narAnswer), written as net/http would write it, and records them as the
// router does.

// FastServer serves a listener with the fast path in front of an http.Server.
type FastServer = fastpath.Server

// NewFastServer puts the fast path of s in front of hs, whose Handler is s. hs's IdleTimeout and
// ReadHeaderTimeout apply to the connections the fast path reads too, and s's WriteIdleTimeout to
// every answer on them, the fast path's and net/http's (hs's WriteTimeout is not supported: the
// write deadline is the progress bound's).
func NewFastServer(s *Server, hs *http.Server) *FastServer {
	return fastpath.New(&fastHandler{s: s}, hs, fastpath.Options{WriteIdleTimeout: s.cfg.WriteIdleTimeout, Log: s.log})
}

// WriteIdleListener returns ln with connections whose writes fail after idle without progress
// (0: never), for an http.Server without the fast path (which bounds its connections itself).
// Writes and files go out as on the fast path: a file with sendfile. It is not for a server with
// a WriteTimeout, whose write deadline these connections would move.
func WriteIdleListener(ln net.Listener, idle time.Duration) net.Listener {
	return fastpath.WriteIdleListener(ln, idle)
}

type fastHandler struct {
	s             *Server
	narsElsewhere atomic.Bool // the backend's NARs are not local files: the router sends them
}

// fastConn is what fastHandler keeps per connection (fastpath.Answer.Conn): as locals, these
// would move to the heap on every request.
type fastConn struct {
	ans      answer
	id       string
	logAttrs logAttrs
}

// Answer answers req as the router would, or reports false, having done nothing, when only the
// router should answer: on a --private cache (every read needs a token), a lookup that failed
// (writeError's), a miss that a request with credentials might have pulled (the router checks
// the token), a NAR that is not a local file (the router streams it), or any NAR when redirects
// are on (they are for NARs in a bucket, which the fast path never sends itself).
func (h *fastHandler) Answer(ctx context.Context, req *fastpath.Request, fa *fastpath.Answer) bool {
	s := h.s
	if s.cfg.Private {
		return false
	}
	fc, _ := fa.Conn.(*fastConn)
	if fc == nil {
		fc = new(fastConn)
		fa.Conn = fc
	}
	a := &fc.ans
	if !req.NAR {
		if err := s.narInfoAnswer(ctx, a, string(req.Hash), !req.Auth, req.IfNoneMatch); err != nil {
			return false
		}
		if a.status == http.StatusNotFound && req.Auth && s.pull != nil {
			a.reset()
			return false
		}
	} else {
		if h.narsElsewhere.Load() || s.cfg.NarRedirect != nil {
			return false
		}
		name := req.NarPath[1:]
		if err := s.narAnswer(ctx, a, name, name[4:4+len(req.Hash)], !req.Head, ""); err != nil {
			return false
		}
		if _, ok := a.obj.(backend.LocalFile); !ok {
			h.narsElsewhere.Store(true)
			a.obj.Close()
			a.reset()
			return false
		}
	}
	fc.id = fastRequestID(req.RequestID)
	var modTime time.Time
	fa.Body, fa.Size = a.text, int64(len(a.text))
	if a.obj != nil {
		info := a.obj.Info()
		fa.File, fa.Size, modTime = a.obj.(backend.LocalFile).OSFile(), info.Size, info.ModTime
	}
	fa.Head = appendHead(fa.Head[:0], a, fa.Size, modTime)
	fa.Head = append(fa.Head, "X-Request-Id: "...)
	fa.Head = append(fa.Head, fc.id...)
	fa.Head = append(fa.Head, "\r\n"...)
	return true
}

// Sent records the request as the router's middleware does, renews what the answer says, and
// lets go of it.
func (h *fastHandler) Sent(req *fastpath.Request, fa *fastpath.Answer, firstByte time.Time, sent int64, err error) {
	fc := fa.Conn.(*fastConn)
	a := &fc.ans
	if a.touch != "" {
		h.s.cache.Touch(a.touch)
	}
	path, route := req.NarPath, routeNar
	if !req.NAR {
		path, route = string(req.Path), routeTopLevel
	}
	h.s.record(context.Background(), answered{
		method: req.Method(), path: path, remote: req.Remote, id: fc.id, route: route,
		status: a.status, sent: sent, start: req.Start, firstByte: firstByte, err: err, attrs: &fc.logAttrs,
	})
	if a.obj != nil {
		a.obj.Close()
	}
	a.reset()
}

// fastRequestID is the request's X-Request-Id when it is safe to repeat, else a new one (as
// the router's).
func fastRequestID(sent []byte) string {
	if id := string(sent); validRequestID(id) {
		return id
	}
	return newRequestID()
}

// appendHead appends a's status line and header lines to b, as net/http writes them for
// writeAnswer, for a request without Range or conditions: with an object, what
// http.ServeContent adds (Accept-Ranges, Content-Length, Last-Modified); a 304 without
// Content-Type or Content-Length. The fast path never sends a redirect (Location).
func appendHead(b []byte, a *answer, size int64, modTime time.Time) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(a.status)...)
	b = append(b, "\r\n"...)
	if a.obj != nil {
		b = append(b, "Accept-Ranges: bytes\r\n"...)
	}
	if a.cacheControl != nil {
		b = append(b, "Cache-Control: "...)
		b = append(b, a.cacheControl[0]...)
		b = append(b, "\r\n"...)
	}
	if a.status != http.StatusNotModified {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, size, 10)
		b = append(b, "\r\n"...)
		if a.contentType != nil {
			b = append(b, "Content-Type: "...)
			b = append(b, a.contentType[0]...)
			b = append(b, "\r\n"...)
		}
	}
	if a.etag.n > 0 {
		b = append(b, "Etag: "...)
		b = append(b, a.etag.bytes()...)
		b = append(b, "\r\n"...)
	}
	if a.obj != nil && !modTime.IsZero() && !modTime.Equal(time.Unix(0, 0)) { // as http.ServeContent
		b = append(b, "Last-Modified: "...)
		b = modTime.UTC().AppendFormat(b, http.TimeFormat)
		b = append(b, "\r\n"...)
	}
	return b
}
