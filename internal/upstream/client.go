package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// upstream is one cache pulled from, with its own connections and breaker.
type upstream struct {
	base    *url.URL // ends in "/"
	name    string   // base as shown in logs and metrics: no credentials
	client  *http.Client
	breaker breaker
	idle    time.Duration // longest wait for the next bytes of a body
	// small bounds a whole small answer (a narinfo), which a body trickling a byte at a time
	// under the idle timeout would otherwise hold for ever.
	small time.Duration
}

func newUpstream(raw string, t Timeouts, br BreakerConfig, creds Credentials) (*upstream, error) {
	shown := RedactURL(raw)
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the URL, password and all; its reason may quote a part.
		if shown != raw {
			return nil, fmt.Errorf("upstream %q: not a URL", shown)
		}
		return nil, fmt.Errorf("upstream: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: want an http:// or https:// URL", shown)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %q: a query or fragment has no meaning here", shown)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		u.RawPath = ""
	}
	// The URL's credentials leave the URL: the transport adds them, to this scheme and host only.
	auth := credentialsFor(u, creds)
	u.User = nil
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   t.Connect,
		ResponseHeaderTimeout: t.FirstByte,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &upstream{
		base:    u,
		name:    u.String(),
		client:  &http.Client{Transport: &authTransport{next: tr, scheme: u.Scheme, host: u.Host, auth: auth}},
		breaker: breaker{failures: br.Failures, cooldown: br.Cooldown},
		idle:    t.Idle,
		small:   t.Connect + t.FirstByte + t.Idle,
	}, nil
}

// errBreakerOpen is a request not sent: the upstream's breaker is open.
var errBreakerOpen = errors.New("circuit breaker open")

// statusError is an answer other than 200 or 404.
type statusError struct {
	url    string
	status int
}

func (e *statusError) Error() string { return fmt.Sprintf("GET %s: status %d", e.url, e.status) }

// get sends GET base+rel. It returns the response of a 200 (its body bounded by the idle
// timeout: cancel ends it), found false for a 404, or an error (which counts against the
// breaker; a 401 is one: a cache that wants credentials it did not get has not said it lacks the
// path). The request carries the upstream's credentials, if any (authTransport).
func (u *upstream) get(ctx context.Context, rel string) (resp *http.Response, cancel context.CancelFunc, found bool, err error) {
	return u.getFrom(ctx, rel, -1, "")
}

// getFrom is get of the bytes from offset on (Range: bytes=from-, If-Range: validator), when
// from >= 0: only a 206 that starts there is found.
func (u *upstream) getFrom(ctx context.Context, rel string, from int64, validator string) (resp *http.Response, cancel context.CancelFunc, found bool, err error) {
	if !u.breaker.allow(time.Now()) {
		return nil, nil, false, errBreakerOpen
	}
	ref, err := url.Parse(rel)
	if err != nil {
		u.breaker.success() // nothing was asked: a probe that proves nothing must not hold the breaker
		return nil, nil, false, fmt.Errorf("upstream %s: URL %q: %w", u.name, rel, err)
	}
	target := u.base.ResolveReference(ref)
	ctx, cancel = context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		cancel()
		u.breaker.success()
		return nil, nil, false, err
	}
	req.Header.Set("User-Agent", "cached (pull-through)")
	if from >= 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
		if validator != "" {
			req.Header.Set("If-Range", validator)
		}
	}
	resp, err = u.client.Do(req)
	if err != nil {
		cancel()
		if ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded) {
			u.breaker.failure(time.Now())
		} else {
			u.breaker.success() // our caller gave up: not the upstream's fault
		}
		return nil, nil, false, fmt.Errorf("upstream %s: %w", u.name, err)
	}
	if from >= 0 {
		if resp.StatusCode == http.StatusPartialContent && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", from)) {
			u.breaker.success()
			resp.Body = newIdleReader(resp.Body, u.idle, cancel)
			return resp, cancel, true, nil
		}
		drain(resp.Body)
		cancel()
		return nil, nil, false, fmt.Errorf("upstream %s: asked to resume at byte %d, got status %d (Content-Range %q)", u.name, from, resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	switch resp.StatusCode {
	case http.StatusOK:
		u.breaker.success()
		resp.Body = newIdleReader(resp.Body, u.idle, cancel)
		return resp, cancel, true, nil
	case http.StatusNotFound, http.StatusForbidden, http.StatusGone:
		// S3 buckets answer 403 for a missing key without list permission.
		u.breaker.success()
		drain(resp.Body)
		cancel()
		return nil, nil, false, nil
	}
	drain(resp.Body)
	cancel()
	u.breaker.failure(time.Now())
	return nil, nil, false, &statusError{url: target.String(), status: resp.StatusCode}
}

func drain(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 4096) // lets the connection be reused
	body.Close()
}

// idleReader cancels its request when no byte of the body arrives for idle: a body that stalls
// fails instead of holding the fetch (and every client waiting for it) forever.
type idleReader struct {
	r      io.ReadCloser
	idle   time.Duration
	cancel context.CancelFunc
	mu     sync.Mutex
	timer  *time.Timer
	fired  bool
}

// ErrIdle is the error a body that stalled ends with.
var ErrIdle = errors.New("upstream sent nothing for the idle timeout")

func newIdleReader(r io.ReadCloser, idle time.Duration, cancel context.CancelFunc) io.ReadCloser {
	if idle <= 0 {
		return r
	}
	ir := &idleReader{r: r, idle: idle, cancel: cancel}
	ir.timer = time.AfterFunc(idle, func() {
		ir.mu.Lock()
		ir.fired = true
		ir.mu.Unlock()
		cancel()
	})
	return ir
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	ir.mu.Lock()
	fired := ir.fired
	ir.mu.Unlock()
	if fired {
		return n, fmt.Errorf("%w (%s)", ErrIdle, ir.idle)
	}
	if n > 0 {
		ir.timer.Reset(ir.idle)
	}
	return n, err
}

func (ir *idleReader) Close() error {
	ir.timer.Stop()
	return ir.r.Close()
}

// resumingBody is a NAR's body that, when the connection breaks or stalls mid-way, asks the
// upstream for the rest (Range, If-Range on the first answer's validator) up to retries times;
// a resumed answer that is not the same file from the same byte ends it with the first error.
type resumingBody struct {
	ctx       context.Context
	u         *upstream
	rel       string
	validator string // ETag, else Last-Modified, of the first answer; "" never resumes
	rc        io.ReadCloser
	cancel    context.CancelFunc
	off       int64
	retries   int
	resumed   int // how many times it did
	log       func(from int64, err error)
}

func (b *resumingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.off += int64(n)
	if err == nil || err == io.EOF || n > 0 {
		return n, err
	}
	for b.retries > 0 && b.validator != "" && b.ctx.Err() == nil {
		b.retries--
		b.log(b.off, err)
		resp, cancel, _, rerr := b.u.getFrom(b.ctx, b.rel, b.off, b.validator)
		if rerr != nil {
			return 0, fmt.Errorf("%w; resuming: %w", err, rerr)
		}
		b.rc.Close()
		b.cancel()
		b.rc, b.cancel = resp.Body, cancel
		b.resumed++
		n, err = b.rc.Read(p)
		b.off += int64(n)
		if err == nil || err == io.EOF || n > 0 {
			return n, err
		}
	}
	return 0, err
}

func (b *resumingBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}
