package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

type ctxKey int

const errKey ctxKey = 0

// errHolder lets writeError hand the error to the request log line.
type errHolder struct{ err error }

func setErr(r *http.Request, err error) {
	if h, ok := r.Context().Value(errKey).(*errHolder); ok {
		h.err = err
	}
}

// statusWriter records status and size for the log line. It keeps io.ReaderFrom so that NAR
// bodies still go out through sendfile.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
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

// logRequests writes one line per request.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		holder := &errHolder{}
		r = r.WithContext(context.WithValue(r.Context(), errKey, holder))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status, "bytes", sw.bytes,
			"dur_ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr}
		if r.ContentLength > 0 {
			attrs = append(attrs, "req_bytes", r.ContentLength)
		}
		if holder.err != nil {
			attrs = append(attrs, "err", holder.err.Error())
		}
		s.log.Info("request", attrs...)
	})
}

// recoverPanics turns a handler panic into a 500 and a log line instead of a dead connection.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// writerOnly hides every method but Write, so io.Copy cannot loop back into ReadFrom.
type writerOnly struct{ io.Writer }
