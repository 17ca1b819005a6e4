package server

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// How the fast path (fastpath.go) answers a narinfo or NAR request: with the answer the router
// sends (narInfoAnswer, narAnswer), written on the socket itself.

// answer sends the answer to req, a narinfo, as the router would (narInfoAnswer), and records
// it. It reports false, having written nothing, when only the router should answer: a lookup
// that failed (writeError's), or a miss that a request with credentials might have pulled (the
// router checks the token).
func (f *FastServer) answer(fc *fastConn, req *fastRequest) bool {
	start := time.Now()
	a := &fc.ans
	if err := f.s.narInfoAnswer(f.ctx, a, string(req.hash), !req.auth, req.ifNoneMatch); err != nil {
		return false
	}
	if a.status == http.StatusNotFound && req.auth && f.s.pull != nil {
		a.reset()
		return false
	}
	f.send(fc, req, a, string(req.path), routeTopLevel, start)
	return true
}

// answerNar sends a NAR of the disk backend as the router would (narAnswer): its head, then
// the file through sendfile. It reports false, having written nothing, for anything else (a
// NAR that is missing, which may be an uploaded name the router recompresses; an object that
// is not a local file; an error), which the router then answers. Nor does it answer NARs when
// redirects are on: they are for NARs in a bucket, which the fast path never sends itself.
func (f *FastServer) answerNar(fc *fastConn, req *fastRequest) bool {
	if f.narsElsewhere.Load() || f.s.cfg.NarRedirect != nil {
		return false
	}
	start := time.Now()
	name := req.narPath[1:]
	a := &fc.ans
	if err := f.s.narAnswer(f.ctx, a, name, name[4:4+len(req.hash)], !req.head, ""); err != nil {
		return false
	}
	if _, ok := a.obj.(backend.LocalFile); !ok {
		// Not the disk backend: every NAR is the router's, which streams it.
		f.narsElsewhere.Store(true)
		a.obj.Close()
		a.reset()
		return false
	}
	f.send(fc, req, a, req.narPath, routeNar, start)
	return true
}

// send writes a, the answer to req, on fc: the same status and headers as writeAnswer
// (answer.go) has net/http write, and the body; then it records the request (path and route
// are its log and metric labels), renews what the answer says, and empties a. A failure once
// the answer has begun closes the connection (req.close), as net/http does: only a closed
// connection tells the client its answer is short.
func (f *FastServer) send(fc *fastConn, req *fastRequest, a *answer, path, route string, start time.Time) {
	var file *os.File
	var size int64
	var modTime time.Time
	if a.obj != nil {
		info := a.obj.Info()
		file, size, modTime = a.obj.(backend.LocalFile).OSFile(), info.Size, info.ModTime
	} else {
		size = int64(len(a.text))
	}
	id := req.id()
	h := appendHead(fc.scratch[:0], a, size, modTime)
	h = f.appendTail(h, id, req.close, start)
	fc.scratch = h
	f.answered.Add(1) // before a byte goes out: a client that has the answer sees it counted
	firstByte := time.Now()
	var sent int64
	var err error
	switch {
	case file == nil:
		fc.bw.Write(h) // sent with whatever follows
		if !req.head && a.text != nil {
			fc.bw.Write(a.text)
			sent = size
		}
	case req.head:
		fc.bw.Write(h)
	case fc.bw.Buffered() > 0 || size == 0: // answers to pipelined requests go first;
		// an empty file has no body to send the head with (MSG_MORE would hold it back ~200 ms)
		fc.bw.Write(h)
		err = fc.bw.Flush()
	default:
		err = writeMore(fc.sock, h)
	}
	if err == nil && file != nil && !req.head {
		// The kernel copies it (sendfile), and a client that stops reading for
		// WriteIdleTimeout fails it.
		sent, err = fc.sock.SendFile(file, size)
	}
	if err != nil {
		req.close = true
	}
	if a.touch != "" {
		f.s.cache.Touch(a.touch)
	}
	f.s.record(context.Background(), answered{
		method: req.method(), path: path, remote: fc.remote, id: id, route: route,
		status: a.status, sent: sent, start: start, firstByte: firstByte, err: err, attrs: &fc.logAttrs,
	})
	if a.obj != nil {
		a.obj.Close()
	}
	a.reset()
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

// appendTail ends the header block as net/http does: X-Request-Id, Connection when closing,
// then Date.
func (f *FastServer) appendTail(b []byte, id string, closing bool, now time.Time) []byte {
	b = append(b, "X-Request-Id: "...)
	b = append(b, id...)
	b = append(b, "\r\n"...)
	if closing {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, f.dateLine(now)...)
	return append(b, "\r\n"...)
}

// dateLine is "Date: <IMF-fixdate>\r\n" for now, formatted at most once a second.
type dateLine struct {
	sec  int64
	line []byte
}

func (f *FastServer) dateLine(now time.Time) []byte {
	sec := now.Unix()
	if d := f.date.Load(); d != nil && d.sec == sec {
		return d.line
	}
	line := now.UTC().AppendFormat([]byte("Date: "), http.TimeFormat)
	line = append(line, "\r\n"...)
	f.date.Store(&dateLine{sec: sec, line: line})
	return line
}
