// Package fastpath is cached's fast path for HTTP/1.1. A substituter's traffic is mostly narinfo
// GETs and HEADs, most of them misses, then NAR downloads, and net/http's per-request work
// (parsing every header into a map, a Request and a response, a goroutine watching the
// connection, the router and the middleware) costs more than the lookup itself: a plain
// net/http server answering a fixed 404 is about 35% slower than nginx answering it from disk,
// and a small NAR through http.ServeContent took half as long again as nginx's.
//
// Server reads each request head on a plain HTTP/1.1 connection itself. When the request is
// exactly GET or HEAD /<store hash>.narinfo or /nar/<file hash>.nar[.ext], with no body, no
// upgrade and nothing unusual in its head, its Handler is asked to answer it: package server's
// gives the answer its router sends, and records it the same way. A NAR goes out with sendfile,
// its head in the same segment. Anything else (an upload, a Range or conditional NAR request, a
// query string, an odd header, a malformed head, HTTP/1.0, an h2c preface, a request the
// Handler does not answer) hands the connection, with the bytes already read, to net/http for
// the rest of its life, which answers it as before. The fast path therefore never refuses
// anything itself: it only accepts what it fully understands. A connection handed over after
// the fast path answered on it stays HTTP/1.1, as a connection of net/http alone does: h2c (an
// HTTP/2 preface in clear text) is for its first bytes only.
//
// The package knows HTTP/1.1 connections and which request targets are narinfos and NARs; it
// decides no status and no header of an answer. server.go holds the connections (accepting,
// reading heads, deadlines, the hand-off to net/http, shutting down), request.go parses a head,
// answer.go is the Handler interface and sends an answer, rawio*.go does the socket I/O.
package fastpath

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves a listener with the fast path in front of an http.Server.
type Server struct {
	h       Handler
	opt     Options
	hs      *http.Server
	handoff *handoffListener
	// http1 serves the connections handed over after the fast path answered on them, when hs
	// would take an HTTP/2 preface there for h2c: h2c is for the first bytes of a connection
	// only, and net/http alone answers a later preface as an HTTP/1.1 request. Nil when hs
	// does not speak h2c.
	http1        *http.Server
	handoffHTTP1 *handoffListener

	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
	ln      net.Listener

	// ctx is what the fast path's lookups run under (a read-through to a shared bucket, an
	// upstream): a request's connection is not watched while it is answered, so ctx ends only
	// when Shutdown gives up waiting for requests in flight.
	ctx    context.Context
	cancel context.CancelFunc

	date     atomic.Pointer[dateLine] // the Date header, formatted once a second
	answered atomic.Uint64
}

// Answered is how many requests the fast path has answered itself.
func (f *Server) Answered() uint64 { return f.answered.Load() }

// New puts the fast path in front of hs, whose Handler answers what h does not. hs's IdleTimeout
// and ReadHeaderTimeout apply to the connections the fast path reads too, and
// opt.WriteIdleTimeout to every answer on them, the fast path's and net/http's (hs's
// WriteTimeout is not supported: the write deadline is the progress bound's).
func New(h Handler, hs *http.Server, opt Options) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	return &Server{h: h, opt: opt, hs: hs, conns: map[*conn]struct{}{}, ctx: ctx, cancel: cancel}
}

// Serve accepts connections on ln until Shutdown; it returns http.ErrServerClosed then.
func (f *Server) Serve(ln net.Listener) error {
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
			f.opt.Log.Warn("accept", "err", err, "retry_in", backoff)
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
func (f *Server) Shutdown(ctx context.Context) error {
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

// conn is one connection the fast path is reading.
type conn struct {
	c      net.Conn
	sock   connIO // c's socket I/O (rawio_linux.go); br and bw read and write through it
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	idle   atomic.Bool // waiting for the next request
	// The request being answered and its answer, in the connection: as locals they would
	// move to the heap (the Handler is an interface). Head's array is reused.
	req Request
	ans Answer

	idleSince     time.Time // when the idle deadline was last set
	deadlineMoved bool      // since then, to bound a head that came in pieces
	answered      bool      // a request was answered on this connection
	headDeadline  time.Time // when the head being read must be complete; zero: no bound yet
}

// headMax bounds a request head the fast path reads; a longer one goes to net/http (whose
// limit, MaxHeaderBytes, is larger). Nix's narinfo requests are about 200 bytes.
const headMax = 4096

func (f *Server) serveConn(c net.Conn) {
	defer f.wg.Done()
	accepted := time.Now()
	sock := newSockIO(c, f.opt.WriteIdleTimeout)
	fc := &conn{c: c, sock: sock, br: bufio.NewReaderSize(sock, headMax), bw: bufio.NewWriterSize(sock, 4096), remote: c.RemoteAddr().String()}
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
				if w := f.opt.WriteIdleTimeout; w > 0 {
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
		req := &fc.req
		ok := head != nil && parseRequest(head, req)
		if ok {
			req.Remote, req.Start = fc.remote, time.Now()
			ok = f.h.Answer(f.ctx, req, &fc.ans)
		}
		if ok {
			f.send(fc, req)
		} else {
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
		if req.Close {
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
func (f *Server) wait(fc *conn, n int) ([]byte, error) {
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
func (f *Server) headerTimeout() time.Duration {
	if f.hs.ReadHeaderTimeout > 0 {
		return f.hs.ReadHeaderTimeout
	}
	return f.hs.ReadTimeout
}

// readHead returns the request head at the start of fc's buffer, through its blank line,
// without consuming it; nil when net/http should read it instead: it does not fit in
// headMax, or a line of it ends in a bare LF (which net/http accepts and the fast path does
// not: it must not wait for a CRLFCRLF that will never come).
func (f *Server) readHead(fc *conn) ([]byte, error) {
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
		if len(buf) >= headMax {
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
