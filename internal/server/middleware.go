package server

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

type ctxKey int

const stateKey ctxKey = 0

// requestState is what the request middleware keeps about one request, in one allocation: the
// writer it observes the answer through, the body it counts, the request ID, and the error
// writeError hands to the log line.
type requestState struct {
	w     statusWriter
	body  countingBody
	id    [1]string // the X-Request-Id header value, shared with the response header map
	err   error
	start time.Time
}

func setErr(r *http.Request, err error) {
	if st, ok := r.Context().Value(stateKey).(*requestState); ok {
		st.err = err
	}
}

// requestID is the ID of the request in logs and in the X-Request-Id response header.
func requestID(r *http.Request) string {
	if st, ok := r.Context().Value(stateKey).(*requestState); ok {
		return st.id[0]
	}
	return ""
}

// statusWriter records status, size and the time of the first byte for the log line and the
// metrics. It keeps io.ReaderFrom so that NAR bodies still go out through sendfile; it is the only
// wrapper the observability middleware puts around the connection's writer.
type statusWriter struct {
	http.ResponseWriter
	status    int
	bytes     int64
	firstByte time.Time // when the handler started answering
}

var _ io.ReaderFrom = (*statusWriter)(nil)

func (w *statusWriter) began(code int) {
	if w.status == 0 {
		w.status = code
		w.firstByte = time.Now()
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if code >= 200 { // 1xx answers are interim; the final status comes later
		w.began(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.began(http.StatusOK)
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	w.began(http.StatusOK)
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r) // HTTP/1.1: sendfile for an *os.File
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, r) // HTTP/2 and recorders have no ReadFrom
	}
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes the handlers read.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// logRequests is the observability middleware: it gives each request an ID (echoed in
// X-Request-Id), and when the request is done writes its one log line and records its metrics.
// The log line never holds headers, the query string or bodies, so tokens (Authorization, a
// netrc password) cannot reach the log.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &requestState{start: time.Now()}
		st.w.ResponseWriter = w
		st.id[0] = incomingRequestID(r)
		if st.id[0] == "" {
			st.id[0] = newRequestID()
		}
		w.Header()["X-Request-Id"] = st.id[:]
		r = r.WithContext(context.WithValue(r.Context(), stateKey, st))
		if r.Body != nil && r.Body != http.NoBody {
			st.body.ReadCloser = r.Body
			r.Body = &st.body
		}

		next.ServeHTTP(&st.w, r)

		status := st.w.status
		if status == 0 {
			status = http.StatusOK
		}
		s.record(r.Context(), answered{
			method: r.Method, path: r.URL.Path, remote: r.RemoteAddr, id: st.id[0],
			route:  routeLabel(chi.RouteContext(r.Context()).RoutePattern()),
			status: status, sent: st.w.bytes, received: st.body.n,
			start: st.start, firstByte: st.w.firstByte, err: st.err,
		})
	})
}

// answered is what the log line and the metrics of one request are made of.
type answered struct {
	method, path, remote, id, route string
	status                          int
	sent, received                  int64
	start, firstByte                time.Time // firstByte is zero when nothing was answered
	err                             error
	attrs                           *logAttrs // room for the log line's fields; nil: allocated
}

// logAttrs holds an access line's fields. A handler may not keep them (slog.Record copies), so
// a connection of the fast path reuses one: as a local it would move to the heap on every line.
type logAttrs [9]slog.Attr

// record writes the log line of an answered request and records its metrics: for requests
// through the router (logRequests) and for those the fast path answers (fast.go).
func (s *Server) record(ctx context.Context, a answered) {
	now := time.Now()
	dur := now.Sub(a.start)
	var firstByte time.Duration
	if !a.firstByte.IsZero() {
		firstByte = a.firstByte.Sub(a.start)
	}
	key := seriesKey{route: a.route, method: methodLabel(a.method), code: a.status}
	key.narinfo = a.route == "/{file}" && isNarInfoPath(a.path)
	s.obs.metrics.observe(key, dur, firstByte, a.sent, a.received, a.err)

	level := slog.LevelInfo
	if a.status < 400 && isProbe(a.route) {
		level = slog.LevelDebug
	}
	switch s.cfg.AccessLog {
	case "errors": // successful reads go to debug; writes and failures stay
		if a.status < 400 && (a.method == http.MethodGet || a.method == http.MethodHead) {
			level = slog.LevelDebug
		}
	case "none": // only server errors
		if a.status < 500 {
			level = slog.LevelDebug
		}
	}
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	attrs := a.attrs
	if attrs == nil {
		attrs = new(logAttrs)
	}
	*attrs = logAttrs{
		slog.String("method", a.method),
		slog.String("path", a.path),
		slog.Int("status", a.status),
		slog.Int64("bytes", a.sent),
		slog.Int64("dur_ms", dur.Milliseconds()),
		slog.String("remote", a.remote),
		slog.String("req_id", a.id),
	}
	n := 7
	if a.received > 0 {
		attrs[n] = slog.Int64("req_bytes", a.received)
		n++
	}
	if a.err != nil {
		attrs[n] = slog.String("err", a.err.Error())
		n++
	}
	if p, ok := h.(plainLogger); ok && p.LogPlain(now, level, "request", attrs[:n]) {
		return
	}
	// Straight to the handler: Logger.LogAttrs would also capture the caller's program counter,
	// which no access line shows, at a cost on every request.
	rec := slog.NewRecord(now, level, "request", 0)
	rec.AddAttrs(attrs[:n]...)
	h.Handle(ctx, rec)
}

// plainLogger is a log handler that can write a record of plain strings and integers faster than
// through a slog.Record (cmd/cached's, internal/logging); it reports false when it cannot.
type plainLogger interface {
	LogPlain(t time.Time, level slog.Level, msg string, attrs []slog.Attr) bool
}

// incomingRequestID returns the client's (or a proxy's) X-Request-Id when it is safe to repeat in
// logs and headers: 1 to 64 characters of [A-Za-z0-9._:-]. Anything else is replaced.
func incomingRequestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); validRequestID(id) {
		return id
	}
	return ""
}

// validRequestID reports whether a client's request ID may be repeated in logs and headers.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// newRequestID returns 16 random hex digits: unique enough to find one request in the logs, and
// not a secret.
func newRequestID() string {
	var b [8]byte
	var h [16]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// recoverPanics turns a handler panic into a 500 and a log line instead of a dead connection.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "method", r.Method, "path", r.URL.Path, "req_id", requestID(r), "panic", fmt.Sprint(v))
				s.writeError(w, r, &statusError{http.StatusInternalServerError, "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// writerOnly hides every method but Write, so io.Copy cannot loop back into ReadFrom.
type writerOnly struct{ io.Writer }
