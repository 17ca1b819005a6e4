// Package server is the HTTP surface of cached: the Nix binary cache protocol over go-chi. Its
// handlers are thin (parse the request, call the cache, write the answer); what a request means
// lives in package cache. Errors become status codes in one place, writeError.
//
// One file per endpoint: routes are in New below. GET and HEAD /<hash>.narinfo are answered by
// narInfoAnswer (narinfo.go), and of a stored NAR by narAnswer (nar.go), whichever way the
// request comes: through the router (getNarInfo, getNar) or through the fast path (package
// fastpath, which reads the commonest requests off the connection itself, and fast.go, which
// answers them). Both send the same answer (answer.go) and record it the same way (record,
// middleware.go).
package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/membudget"
	"github.com/cached-dev/cached/internal/upstream"
	"github.com/dustin/go-humanize"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// Config is what the HTTP layer needs.
type Config struct {
	Cache *cache.Cache
	Log   *slog.Logger
	// UploadTokens are accepted as the HTTP Basic password or Bearer token on writes.
	UploadTokens []string
	// Tokens checks presented tokens (scoped tokens in the index, fixed ones from files). When
	// nil, only UploadTokens are accepted.
	Tokens *auth.Store
	// Index is the cache's index, for the admin API (pins, tokens, gc). May be nil: no admin API.
	Index *index.Index
	// Private makes every read need a token with read scope.
	Private bool
	// BodyIdleTimeout fails an upload whose body sends nothing for this long (0: never).
	BodyIdleTimeout time.Duration
	// WriteIdleTimeout drops a connection whose client takes no bytes of an answer for this long
	// (0: never), on the fast path and through net/http. A slow download that moves is never cut.
	WriteIdleTimeout time.Duration
	// WriteRateLimit caps PUT/POST requests per client (token, else IP) per minute (0: none).
	WriteRateLimit int
	// AccessLog is which requests get an info log line: "all" (default), "errors" (writes and
	// failures; successful reads only at debug level) or "none" (server errors only).
	AccessLog string
	// MaxUploadSize bounds a NAR upload's body, in bytes.
	MaxUploadSize int64
	// MaxMetaSize bounds narinfo, listing, log and realisation bodies, in bytes, after decoding.
	MaxMetaSize int64
	// DecoderMemory is the memory budget of the decoders of compressed upload bodies, shared
	// with the cache's NAR uploads (nil: no budget).
	DecoderMemory *membudget.Budget
	// Priority is announced in nix-cache-info (lower wins among substituters).
	Priority int
	// PublicURL is shown on the landing page; empty means "derive from the request".
	PublicURL string
	// Puller answers narinfo and NAR misses from upstream caches (pull.go); nil: off.
	Puller *upstream.Puller
	// NarRedirect answers stored NARs' GETs with a redirect (redirect.go); nil: off.
	NarRedirect *NarRedirect
}

// The routes the fast path answers some requests of, and labels its metrics with.
const (
	routeTopLevel = "/{file}"
	routeNar      = "/nar/{file}"
)

// Server answers the protocol.
type Server struct {
	cfg    Config
	cache  *cache.Cache
	log    *slog.Logger
	tokens *auth.Store
	router chi.Router
	pull   *upstream.Puller // nil: no pull-through
	obs    *observability   // metrics and store counts (metrics.go)
	hdr    cacheHeaders

	gcRunning sync.Mutex // one garbage collection at a time
	// verifyRunning: one verification at a time, since a second would only read everything again.
	verifyRunning sync.Mutex
}

// New builds the handler.
func New(cfg Config) *Server {
	if cfg.MaxMetaSize == 0 {
		cfg.MaxMetaSize = 8 << 20
	}
	if cfg.Priority == 0 {
		cfg.Priority = cache.DefaultPriority
	}
	tokens := cfg.Tokens
	if tokens == nil {
		tokens = auth.NewStore(nil)
	}
	for _, t := range cfg.UploadTokens {
		tokens.AddFixed(t, auth.ScopeWrite)
	}
	s := &Server{cfg: cfg, cache: cfg.Cache, log: cfg.Log, tokens: tokens, hdr: newCacheHeaders(cfg.Private), pull: cfg.Puller}
	s.obs = newObservability(cfg.Cache)
	if cfg.DecoderMemory != nil {
		s.obs.metrics.registerDecoderMemory(cfg.DecoderMemory)
	}
	if s.pull != nil {
		s.obs.metrics.reg.MustRegister(s.pull.Collectors()...)
	}
	r := chi.NewRouter()
	// GetHead answers HEAD with the GET handler; net/http drops the body.
	r.Use(s.logRequests, s.recoverPanics, s.rejectHostilePaths, s.guardWrites, middleware.GetHead)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { s.writeError(w, r, cache.ErrNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &statusError{http.StatusMethodNotAllowed, "method not allowed"})
	})

	if cfg.Private {
		r.Use(s.privateReads)
	}
	r.Get("/", s.landing)
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Get("/metrics", s.serveMetrics)
	r.Get("/nix-cache-info", s.getCacheInfo)
	r.With(s.requireUpload).Put("/nix-cache-info", s.putCacheInfo)
	r.With(s.requireUpload).Post("/_cached/exists", s.postExists) // exists.go

	r.Get(routeTopLevel, s.getTopLevel) // <hash>.narinfo, <hash>.ls
	r.With(s.requireUpload).Put(routeTopLevel, s.putTopLevel)

	r.Get(routeNar, s.getNar)
	r.With(s.requireUpload).Put(routeNar, s.putNar)

	r.Get("/log/{drv}", s.getLog)
	r.With(s.requireUpload).Put("/log/{drv}", s.putLog)

	r.Get("/realisations/{id}", s.getRealisation)
	r.With(s.requireUpload).Put("/realisations/{id}", s.putRealisation)
	r.Get("/build-trace-v2/{drv}/{output}", s.getBuildTrace)
	r.With(s.requireUpload).Put("/build-trace-v2/{drv}/{output}", s.putBuildTrace)

	r.Get("/debuginfo/{id}", s.getDebugInfo)
	r.With(s.requireUpload).Put("/debuginfo/{id}", s.putDebugInfo)

	s.adminRoutes(r)

	s.router = r
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// statusError is an answer a handler decided itself (a conflict, a refusal): writeError sends
// its status and message as they are.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

// writeError maps an error to a status code: the one place that does.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		se        *statusError
		ie        *cache.InputError
		notIdx    *cache.NotIndexedError
		tooBig    *http.MaxBytesError
		narTooBig *cache.NarTooLargeError
		memTooBig *membudget.TooLargeError
		memBusy   *membudget.BusyError
		stalled   *stalledError
		status    int
		message   string
	)
	switch {
	case errors.As(err, &se):
		status, message = se.status, se.msg
	case errors.As(err, &tooBig):
		status, message = http.StatusRequestEntityTooLarge, "body larger than the limit of "+humanize.IBytes(uint64(tooBig.Limit))
		switch {
		case strings.HasPrefix(r.URL.Path, "/nar/"):
			message += " (--max-upload-size)"
		case !strings.HasPrefix(r.URL.Path, "/_cached/"):
			message += " after decoding (--max-meta-size)"
		}
	case errors.As(err, &memTooBig):
		status, message = http.StatusRequestEntityTooLarge, memTooBig.Error()+" (--decoder-memory); nothing was stored"
	case errors.As(err, &memBusy):
		status, message = http.StatusServiceUnavailable, memBusy.Error()+" (--decoder-memory); nothing was stored, try again"
		w.Header().Set("Retry-After", "5")
	case errors.As(err, &narTooBig):
		status, message = http.StatusRequestEntityTooLarge, "NAR larger than the limit of "+humanize.IBytes(uint64(narTooBig.Limit))+" once decompressed (--max-nar-size); nothing was stored"
	case errors.As(err, &stalled):
		status, message = http.StatusRequestTimeout, stalled.Error()
	case errors.As(err, &ie):
		status, message = http.StatusBadRequest, err.Error()
	case errors.Is(err, cache.ErrNotFound):
		status, message = http.StatusNotFound, "not found"
	case errors.As(err, &notIdx):
		// The object is saved; retrying the upload completes the index.
		status, message = http.StatusServiceUnavailable, "index temporarily unavailable: "+notIdx.Name+" was saved but not indexed, so it is not served yet; retry"
		w.Header().Set("Retry-After", "5")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		status, message = 499, "client closed request"
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		// The index or backend cannot answer: a 5xx makes nix retry, where a 404 would make it
		// believe the path is absent.
		status, message = http.StatusServiceUnavailable, "cache temporarily unavailable"
	default:
		// Storage failed (an S3 outage or throttling, a full disk): nothing was stored, and nix
		// retries a 503.
		status, message = http.StatusServiceUnavailable, "storage temporarily unavailable; nothing was stored"
		w.Header().Set("Retry-After", "5")
	}
	setErr(r, err)
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, message, status)
}

// rejectHostilePaths refuses traversal and encoded separators before routing, so no handler
// ever sees them.
func (s *Server) rejectHostilePaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		bad := strings.ContainsAny(p, "\\\x00") || strings.Contains(p, "//") || hasDotSegment(p)
		raw := strings.ToLower(r.URL.RawPath)
		if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") || strings.Contains(raw, "%00") {
			bad = true
		}
		if bad {
			s.writeError(w, r, &statusError{http.StatusBadRequest, "invalid path"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// urlParam returns a route parameter, decoded.
func urlParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath != "" {
		if d, err := urlUnescape(v); err == nil {
			return d
		}
	}
	return v
}

// privateReads makes every GET and HEAD need a read token (--private), except the health checks
// a load balancer makes.
func (s *Server) privateReads(next http.Handler) http.Handler {
	guarded := s.requireScope(auth.ScopeRead)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			guarded.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hasDotSegment reports whether a slash-separated path has a "." or ".." segment (without
// allocating: this runs on every request).
func hasDotSegment(p string) bool {
	for len(p) > 0 {
		i := strings.IndexByte(p, '/')
		seg := p
		if i >= 0 {
			seg, p = p[:i], p[i+1:]
		} else {
			p = ""
		}
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
