package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTPError is an answer the server gave that is not a success, after any retries.
type HTTPError struct {
	Method string
	Path   string // relative to the cache URL
	Status int
	Body   string // the server's reason, trimmed
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// ErrAuth wraps a 401 or 403: the token is wrong or lacks write scope, and every other request
// would fail the same way.
var ErrAuth = errors.New("the server refused the token")

// client makes requests to the cache with the token and retries transient failures.
type client struct {
	base     string // the cache URL without a trailing slash
	token    string
	http     *http.Client
	attempts int
	delay    time.Duration // before the second attempt; doubled after each
	maxDelay time.Duration
	log      *slog.Logger
}

// request is one request to make, possibly more than once.
type request struct {
	method      string
	path        string // relative to the cache URL: "nar/...", "<hash>.narinfo"
	contentType string
	size        int64 // the body's length, -1 if unknown
	// body returns the body for one attempt (nil for none).
	body func(ctx context.Context) io.Reader
	// after ends an attempt; an error it returns (the body turned out bad) is final.
	after func() error
	// into, if not nil, receives the body of a 2xx answer (at most 64 KiB).
	into io.Writer
}

// retryable reports whether a status is worth another attempt: the server is overloaded, or
// failed in a way that was not the request's fault.
func retryable(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported, http.StatusNetworkAuthenticationRequired:
		return false
	}
	return status >= 500
}

// do makes the request, retrying connection failures, 408, 429 and 5xx answers with backoff
// (honouring Retry-After), and returns the final status: a 2xx, or a 404 to a HEAD. Any other
// answer is an *HTTPError carrying the server's reason; a 401 or 403 also wraps ErrAuth.
func (c *client) do(ctx context.Context, r request) (int, error) {
	delay := c.delay
	for attempt := 1; ; attempt++ {
		status, wait, err := c.once(ctx, r)
		if r.after != nil {
			if bad := r.after(); bad != nil {
				return 0, bad
			}
		}
		if err == nil {
			return status, nil
		}
		var herr *HTTPError
		if errors.As(err, &herr) && !retryable(herr.Status) || ctx.Err() != nil {
			return 0, err
		}
		if attempt >= c.attempts {
			return 0, fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		if wait <= 0 {
			// Jitter keeps parallel uploads that failed together from retrying together.
			wait = delay/2 + rand.N(delay/2+1)
		}
		wait = min(wait, c.maxDelay)
		c.log.Warn("retrying", "method", r.method, "path", r.path, "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
		delay = min(2*delay, c.maxDelay)
	}
}

// once makes one attempt. An answer other than a 2xx (or a 404 to a HEAD) is an HTTPError
// carrying the server's reason, with how long Retry-After asked to wait.
func (c *client) once(ctx context.Context, r request) (int, time.Duration, error) {
	var body io.Reader
	if r.body != nil {
		body = r.body(ctx)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+"/"+r.path, body)
	if err != nil {
		return 0, 0, err
	}
	if r.body != nil {
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	defer resp.Body.Close()
	if r.into != nil && resp.StatusCode < 300 {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return 0, 0, fmt.Errorf("%s %s: reading the answer: %w", r.method, r.path, err)
		}
		r.into.Write(b)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // lets the connection be reused
	if resp.StatusCode < 300 || r.method == http.MethodHead && resp.StatusCode == http.StatusNotFound {
		return resp.StatusCode, 0, nil
	}
	herr := &HTTPError{Method: r.method, Path: r.path, Status: resp.StatusCode, Body: strings.TrimSpace(string(msg))}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return 0, 0, fmt.Errorf("%w: %w", ErrAuth, herr)
	}
	return 0, retryAfter(resp.Header.Get("Retry-After")), herr
}

// retryAfter reads a Retry-After header given in seconds (the form cached sends).
func retryAfter(v string) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || s < 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}
