package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/cache"
)

// The fast path. A substituter's traffic is mostly narinfo GETs and HEADs, most of them misses,
// then NAR downloads, and net/http's per-request work (parsing every header into a map, a
// Request and a response, a goroutine watching the connection, the router and the middleware)
// costs more than the lookup itself: a plain net/http server answering a fixed 404 is about 35%
// slower than nginx answering it from disk, and a small NAR through http.ServeContent took half
// as long again as nginx's.
//
// FastServer reads each request head on a plain HTTP/1.1 connection itself. When the request is
// exactly GET or HEAD /<store hash>.narinfo, or GET or HEAD of a whole NAR the disk backend holds,
// over HTTP/1.1, with no body, no upgrade and nothing unusual in its head, it is answered here,
// with the same headers, log line and metrics as the router would give it; a NAR goes out with
// sendfile, its head in the same segment. Anything else (an upload, a Range or conditional NAR
// request, a NAR under its uploaded name, a NAR on S3, a query string, an odd header, a malformed
// head, HTTP/1.0, an h2c preface, a lookup that fails) hands the connection, with the bytes
// already read, to net/http for the rest of its life, which answers it as before. The fast path
// therefore never refuses anything itself: it only accepts what it fully understands. A
// connection handed over after the fast path answered on it stays HTTP/1.1, as a connection of
// net/http alone does: h2c (an HTTP/2 preface in clear text) is for its first bytes only.
//
// It is off for --private caches (every read needs a token) and over TLS.

// FastServer serves a listener with the fast path in front of an http.Server.
type FastServer struct {
	s       *Server
	hs      *http.Server
	handoff *handoffListener
	// http1 serves the connections handed over after the fast path answered on them, when hs
	// would take an HTTP/2 preface there for h2c: h2c is for the first bytes of a connection
	// only, and net/http alone answers a later preface as an HTTP/1.1 request. Nil when hs
	// does not speak h2c.
	http1        *http.Server
	handoffHTTP1 *handoffListener

	mu      sync.Mutex
	conns   map[*fastConn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
	ln      net.Listener

	// ctx is what the fast path's lookups run under (a read-through to a shared bucket, an
	// upstream): a request's connection is not watched while it is answered, so ctx ends only
	// when Shutdown gives up waiting for requests in flight.
	ctx    context.Context
	cancel context.CancelFunc

	date          atomic.Pointer[dateLine] // the Date header, formatted once a second
	answered      atomic.Uint64
	narsElsewhere atomic.Bool // the backend's NARs are not local files: the router sends them
}

// Answered is how many requests the fast path has answered itself.
func (f *FastServer) Answered() uint64 { return f.answered.Load() }

// NewFastServer puts the fast path of s in front of hs, whose Handler is s. hs's IdleTimeout and
// ReadHeaderTimeout apply to the connections the fast path reads too, and s's WriteIdleTimeout to
// every answer on them, the fast path's and net/http's (hs's WriteTimeout is not supported: the
// write deadline is the progress bound's).
func NewFastServer(s *Server, hs *http.Server) *FastServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &FastServer{s: s, hs: hs, conns: map[*fastConn]struct{}{}, ctx: ctx, cancel: cancel}
}

// Serve accepts connections on ln until Shutdown; it returns http.ErrServerClosed then.
func (f *FastServer) Serve(ln net.Listener) error {
	f.mu.Lock()
	f.ln = ln
	f.handoff = newHandoffListener(ln.Addr())
	if f.hs.Protocols != nil && f.hs.Protocols.UnencryptedHTTP2() {
		f.http1 = http1Twin(f.hs)
		f.handoffHTTP1 = newHandoffListener(ln.Addr())
		go f.http1.Serve(f.handoffHTTP1)
	}
	f.mu.Unlock()
	go f.hs.Serve(f.handoff) // returns when Shutdown closes the hand-off listener
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.closing.Load() || errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			// Out of file descriptors and the like: wait, as net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.s.log.Warn("accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		// Under mu, against Shutdown: it sets closing before taking mu and waits on wg after
		// releasing it, so a connection either is counted before that wait or is closed here.
		f.mu.Lock()
		if f.closing.Load() {
			f.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		f.wg.Add(1)
		f.mu.Unlock()
		go f.serveConn(c)
	}
}

// Shutdown stops accepting, closes idle connections (the fast path's and net/http's), and waits
// for requests in flight until ctx ends.
func (f *FastServer) Shutdown(ctx context.Context) error {
	f.closing.Store(true)
	f.mu.Lock()
	if f.ln != nil {
		f.ln.Close()
	}
	for fc := range f.conns {
		if fc.idle.Load() {
			fc.c.SetReadDeadline(time.Now()) // wakes its wait for the next request
		}
	}
	twin := f.http1
	f.mu.Unlock()
	err := f.hs.Shutdown(ctx)
	if twin != nil {
		if terr := twin.Shutdown(ctx); err == nil {
			err = terr
		}
	}
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		f.cancel()
	case <-ctx.Done():
		f.cancel() // lookups still in flight give up
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// fastConn is one connection the fast path is reading.
type fastConn struct {
	c       net.Conn
	sock    connIO // c's socket I/O (rawio_linux.go); br and bw read and write through it
	br      *bufio.Reader
	bw      *bufio.Writer
	remote  string
	idle    atomic.Bool // waiting for the next request
	scratch []byte      // the head of an answer
	ans     answer      // the answer being sent

	idleSince     time.Time // when the idle deadline was last set
	deadlineMoved bool      // since then, to bound a head that came in pieces
	answered      bool      // a request was answered on this connection
	headDeadline  time.Time // when the head being read must be complete; zero: no bound yet
	logAttrs      logAttrs
}

// fastHeadMax bounds a request head the fast path reads; a longer one goes to net/http (whose
// limit, MaxHeaderBytes, is larger). Nix's narinfo requests are about 200 bytes.
const fastHeadMax = 4096

func (f *FastServer) serveConn(c net.Conn) {
	defer f.wg.Done()
	accepted := time.Now()
	sock := newSockIO(c, f.s.cfg.WriteIdleTimeout)
	fc := &fastConn{c: c, sock: sock, br: bufio.NewReaderSize(sock, fastHeadMax), bw: bufio.NewWriterSize(sock, 4096), remote: c.RemoteAddr().String()}
	f.mu.Lock()
	f.conns[fc] = struct{}{}
	f.mu.Unlock()
	handedOff := false
	defer func() {
		f.mu.Lock()
		delete(f.conns, fc)
		f.mu.Unlock()
		if !handedOff {
			// Answers to pipelined requests may still be buffered (the connection ends while
			// the next head is incomplete, or on Shutdown): they are sent, as net/http sends
			// every answer, but a client that reads nothing cannot hold the goroutine.
			if fc.bw.Buffered() > 0 {
				idle := closeFlushTimeout
				if w := f.s.cfg.WriteIdleTimeout; w > 0 {
					idle = min(idle, w)
				}
				sock.setWriteIdle(idle)
				fc.bw.Flush()
			}
			c.Close()
		}
	}()
	// The first head must be complete ReadHeaderTimeout after the connection was accepted,
	// as net/http's conn.serve has it: a client that connects and sends nothing, or too little,
	// is not kept for IdleTimeout, nor given a fresh ReadHeaderTimeout when its first byte comes.
	if d := f.headerTimeout(); d > 0 {
		fc.headDeadline = accepted.Add(d)
		c.SetReadDeadline(fc.headDeadline)
		fc.deadlineMoved = true
	}
	for {
		if f.closing.Load() { // as net/http, no further request once Shutdown has begun
			return
		}
		if fc.answered {
			fc.headDeadline = time.Time{}
		}
		if fc.answered && f.hs.IdleTimeout > 0 {
			// Moving the deadline is a timer update in the runtime: on a busy connection it is
			// moved only every tenth of IdleTimeout (at most once a second), so a client may be
			// dropped after being idle for that much less than IdleTimeout.
			slack := min(f.hs.IdleTimeout/10, time.Second)
			if now := time.Now(); fc.deadlineMoved || now.Sub(fc.idleSince) >= slack {
				c.SetReadDeadline(now.Add(f.hs.IdleTimeout))
				fc.idleSince, fc.deadlineMoved = now, false
			}
		}
		if fc.br.Buffered() == 0 {
			if _, err := f.wait(fc, 1); err != nil {
				return
			}
		}
		head, err := f.readHead(fc)
		if err != nil {
			return // timed out or gone mid-head: net/http would drop it too
		}
		var req fastRequest
		ok := head != nil && !f.s.cfg.Private && parseFastRequest(head, &req)
		switch {
		case ok && req.nar:
			ok = f.answerNar(fc, &req)
		case ok:
			ok = f.answer(fc, &req)
		}
		if !ok {
			if fc.bw.Flush() != nil {
				return
			}
			c.SetReadDeadline(time.Time{})
			to := f.handoff
			if fc.answered && f.handoffHTTP1 != nil {
				to = f.handoffHTTP1
			}
			handedOff = to.push(&replayConn{Conn: &idleConn{Conn: c, io: fc.sock}, br: fc.br, headDeadline: fc.headDeadline})
			return
		}
		fc.answered = true
		fc.br.Discard(len(head))
		if req.close {
			fc.bw.Flush()
			return
		}
		// The answer stays buffered while pipelined requests are answered; wait sends it
		// before blocking for more bytes.
	}
}

// closeFlushTimeout bounds how long a connection the fast path ends may make no progress
// sending the answers still buffered for it (WriteIdleTimeout when that is shorter).
const closeFlushTimeout = 5 * time.Second

// wait blocks until fc's buffer holds n bytes. Answers buffered for pipelined requests go out
// first: the client may wait for them before it sends the rest. While it waits the connection
// counts as idle, so that Shutdown wakes it: as for net/http, a connection whose next head has
// not all arrived has nothing in flight. It fails once Shutdown has begun.
func (f *FastServer) wait(fc *fastConn, n int) ([]byte, error) {
	if fc.bw.Buffered() > 0 {
		if err := fc.bw.Flush(); err != nil {
			return nil, err
		}
	}
	// Shutdown sets closing, then wakes the connections it sees idle: whichever of the two
	// stores the other side reads first, the wait below does not outlast Shutdown.
	fc.idle.Store(true)
	if f.closing.Load() {
		fc.idle.Store(false)
		return nil, http.ErrServerClosed
	}
	b, err := fc.br.Peek(n)
	fc.idle.Store(false)
	if err == nil && f.closing.Load() {
		err = http.ErrServerClosed
	}
	return b, err
}

// headerTimeout is net/http's bound on reading a request head: ReadHeaderTimeout, else
// ReadTimeout.
func (f *FastServer) headerTimeout() time.Duration {
	if f.hs.ReadHeaderTimeout > 0 {
		return f.hs.ReadHeaderTimeout
	}
	return f.hs.ReadTimeout
}

// readHead returns the request head at the start of fc's buffer, through its blank line,
// without consuming it; nil when net/http should read it instead: it does not fit in
// fastHeadMax, or a line of it ends in a bare LF (which net/http accepts and the fast path does
// not: it must not wait for a CRLFCRLF that will never come).
func (f *FastServer) readHead(fc *fastConn) ([]byte, error) {
	buf, _ := fc.br.Peek(fc.br.Buffered())
	deadline := false
	for {
		end := bytes.Index(buf, crlfcrlf)
		head := buf
		if end >= 0 {
			head = buf[:end+4]
		}
		if bareLF(head) {
			return nil, nil
		}
		if end >= 0 {
			return head, nil
		}
		if len(buf) >= fastHeadMax {
			return nil, nil
		}
		// The head came in pieces: bound how long the rest may take (slow-loris clients), from
		// about when its first bytes came, as net/http does for a request after the first. The
		// first request's bound, from the accept, is already set.
		if !deadline && fc.headDeadline.IsZero() {
			if d := f.headerTimeout(); d > 0 {
				fc.headDeadline = time.Now().Add(d)
				fc.c.SetReadDeadline(fc.headDeadline)
				fc.deadlineMoved = true
			}
		}
		deadline = true
		if _, err := f.wait(fc, len(buf)+1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, nil
			}
			return nil, err
		}
		buf, _ = fc.br.Peek(fc.br.Buffered())
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// bareLF reports whether b holds an LF that no CR precedes.
func bareLF(b []byte) bool {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		j := bytes.IndexByte(b[i+1:], '\n')
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// fastRequest is what the fast path needs of a request head. Its byte slices point into the
// connection's read buffer and are valid until the head is discarded.
type fastRequest struct {
	head        bool   // HEAD, else GET
	nar         bool   // a NAR, else a narinfo
	narPath     string // path of a NAR, as a string (its object name is narPath[1:])
	path        []byte // "/<hash>.narinfo" or "/nar/<file hash>.nar[.ext]"
	hash        []byte // the store hash of a narinfo, the file hash of a NAR
	ifNoneMatch []byte
	requestID   []byte
	close       bool // Connection: close
	auth        bool // an Authorization header
	conditional bool // a Range or an If-* header other than If-None-Match
}

// id is the request's X-Request-Id when it is safe to repeat, else a new one (as the router's).
func (r *fastRequest) id() string {
	if id := string(r.requestID); validRequestID(id) {
		return id
	}
	return newRequestID()
}

func (r *fastRequest) method() string {
	if r.head {
		return http.MethodHead
	}
	return http.MethodGet
}

// narPathMax bounds the path of a NAR the fast path answers: "/nar/" + 52 + ".nar.zst".
const narPathMax = len("/nar/") + 52 + len(".nar.zst")

// parseFastRequest parses head (request line, header lines, blank line) into r, and reports
// whether the fast path may answer it. It is strict: anything it does not fully understand is
// false, and net/http, which knows every corner of HTTP/1.1, answers that request instead.
func parseFastRequest(head []byte, r *fastRequest) bool {
	*r = fastRequest{}
	line, rest, ok := cutLine(head)
	if !ok {
		return false
	}
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		line, r.head = line[5:], true
	default:
		return false
	}
	target, ok := bytes.CutSuffix(line, []byte(" HTTP/1.1"))
	if !ok || !parseFastTarget(target, r) {
		return false
	}
	hosts := 0
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			return hosts == 1 && len(rest) == 0 && !(r.nar && (r.conditional || r.ifNoneMatch != nil))
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !isTokenChar(c) {
				return false // includes obs-fold (a line starting with a space) and spaces before the colon
			}
		}
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return false
			}
		}
		switch {
		case asciiEqualFold(name, "host"):
			hosts++
			if len(value) == 0 {
				return false
			}
			for _, c := range value {
				if !isHostChar(c) {
					return false
				}
			}
		case asciiEqualFold(name, "if-none-match"):
			if r.ifNoneMatch != nil {
				return false
			}
			r.ifNoneMatch = value
		case asciiEqualFold(name, "authorization"):
			r.auth = true
		case asciiEqualFold(name, "x-request-id"):
			if r.requestID == nil { // the first, as the router's Header.Get
				r.requestID = value
			}
		case asciiEqualFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				switch {
				case asciiEqualFold(tok, "close"):
					r.close = true
				case asciiEqualFold(tok, "keep-alive"):
				default:
					return false // upgrade, or a hop-by-hop header net/http should see
				}
			}
		case asciiEqualFold(name, "range"), len(name) >= 3 && asciiEqualFold(name[:3], "if-"):
			r.conditional = true // http.ServeContent's business, for a NAR
		case asciiEqualFold(name, "content-length"), asciiEqualFold(name, "transfer-encoding"),
			asciiEqualFold(name, "expect"), asciiEqualFold(name, "upgrade"), asciiEqualFold(name, "http2-settings"):
			return false // a body, or something to negotiate: net/http's business
		}
	}
}

// parseFastTarget takes the request target: exactly /<store hash>.narinfo or
// /nar/<file hash>.nar[.xz|.zst|.bz2|.br], nothing escaped, no query.
func parseFastTarget(t []byte, r *fastRequest) bool {
	const narInfoLen = 1 + 32 + len(".narinfo")
	if len(t) == narInfoLen && t[0] == '/' && bytes.Equal(t[33:], []byte(".narinfo")) {
		r.path, r.hash = t, t[1:33]
		return cache.ValidStoreHash(string(r.hash)) // 32 bytes: converted on the stack
	}
	if len(t) > narPathMax || !bytes.HasPrefix(t, []byte("/nar/")) {
		return false
	}
	p := string(t)
	nn, err := cache.ParseNarName(p[1:])
	if err != nil {
		return false
	}
	r.path, r.hash, r.nar, r.narPath = t, t[5:5+len(nn.FileHash)], true, p
	return true
}

// cutLine cuts one CRLF-terminated line off b; a bare LF or CR is not a line ending here.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may appear in a header name (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func isHostChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_'
}

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

// http1Twin returns a server like hs, for clear-text HTTP/1.1 only: the fields net/http reads
// when it serves such a connection.
func http1Twin(hs *http.Server) *http.Server {
	t := &http.Server{
		Handler:                      hs.Handler,
		DisableGeneralOptionsHandler: hs.DisableGeneralOptionsHandler,
		ReadTimeout:                  hs.ReadTimeout,
		ReadHeaderTimeout:            hs.ReadHeaderTimeout,
		WriteTimeout:                 hs.WriteTimeout,
		IdleTimeout:                  hs.IdleTimeout,
		MaxHeaderBytes:               hs.MaxHeaderBytes,
		ConnState:                    hs.ConnState,
		ErrorLog:                     hs.ErrorLog,
		BaseContext:                  hs.BaseContext,
		ConnContext:                  hs.ConnContext,
		Protocols:                    new(http.Protocols),
	}
	t.Protocols.SetHTTP1(true)
	return t
}

// handoffListener is how connections reach net/http: Accept returns what the fast path handed
// over.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to net/http; it reports false (and closes c) once the listener is closed.
func (l *handoffListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		c.Close()
		return true // closed here: the caller must not close it again
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// replayConn is a connection handed to net/http: it first returns the bytes the fast path had
// read and not answered, then reads the connection. It writes through the fast path's connIO
// (idleConn), so that NAR bodies still go out through sendfile and every write has the same
// progress bound, and it keeps the connection's CloseWrite.
type replayConn struct {
	net.Conn
	br *bufio.Reader // nil once drained
	// headDeadline is when the head the fast path began to read must be complete. net/http
	// sets a read deadline once before it reads a connection's first head (ReadHeaderTimeout
	// from now, in conn.serve); that one is moved no later than this, so that a head handed
	// over halfway gets no more time than the fast path would have given it.
	headDeadline time.Time
}

func (c *replayConn) SetReadDeadline(t time.Time) error {
	if !c.headDeadline.IsZero() {
		if t.IsZero() || t.After(c.headDeadline) {
			t = c.headDeadline
		}
		c.headDeadline = time.Time{}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

func (c *replayConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
