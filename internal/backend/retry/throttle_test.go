package retry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
	"github.com/cached-dev/cached/internal/backend/s3"
)

// The tests in this file put a small fault-injecting reverse proxy between the s3 backend and a
// real S3 server (versitygw). The proxy is a fake, the one allowed here, because a real S3
// server cannot be made to throttle on demand. Everything it lets through is answered by
// versitygw; what it refuses it answers as S3 throttles: a 503 SlowDown, or a 429
// TooManyRequests as S3-compatible servers send.

// throttle is the answer the proxy gives a request it refuses.
type throttle struct {
	status int
	code   string
}

var throttles = []throttle{
	{http.StatusServiceUnavailable, "SlowDown"},
	{http.StatusTooManyRequests, "TooManyRequests"},
}

func (th throttle) String() string { return fmt.Sprintf("%d_%s", th.status, th.code) }

// arrival is one request the proxy received.
type arrival struct {
	at        time.Time
	throttled bool
}

// throttlingProxy forwards to versitygw, except that it throttles the first `first` arrivals
// of every distinct request (since the last reset), or every request if first < 0.
type throttlingProxy struct {
	URL string
	th  throttle

	mu        sync.Mutex
	first     int
	seen      map[string][]arrival // per distinct request, since the last reset
	throttled int                  // responses throttled, since the last reset
	forwarded int
}

func startThrottlingProxy(t *testing.T, g *backendtest.VersityGW, th throttle) *throttlingProxy {
	t.Helper()
	target, err := url.Parse(g.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &throttlingProxy{th: th, seen: map[string][]arrival{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // the SDK signed the host it sent to: the proxy's
			// The proxy has already answered the client's 100-continue by reading the body.
			r.Out.Header.Del("Expect")
		},
		// A part upload cancelled because another part was throttled ends here.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.admit(r) {
			p.refuse(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// requestKey names a request so that its repetitions by a retry share the name: method, path,
// query (without the upload ID, which a retried multipart upload gets anew) and range.
func requestKey(r *http.Request) string {
	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(r.Method + " " + r.URL.Path)
	for _, k := range keys {
		b.WriteString(" " + k)
		if k != "uploadId" {
			b.WriteString("=" + q.Get(k))
		}
	}
	if rg := r.Header.Get("Range"); rg != "" {
		b.WriteString(" range=" + rg)
	}
	return b.String()
}

func (p *throttlingProxy) admit(r *http.Request) bool {
	key := requestKey(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	throttle := p.first < 0 || len(p.seen[key]) < p.first
	p.seen[key] = append(p.seen[key], arrival{at: time.Now(), throttled: throttle})
	if throttle {
		p.throttled++
	} else {
		p.forwarded++
	}
	return !throttle
}

// refuse answers as S3 does when it throttles. The request body is read first, as S3 does
// before answering a PUT; that also answers an Expect: 100-continue.
func (p *throttlingProxy) refuse(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	id := fmt.Sprintf("%016X", rand.Uint64())
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-amz-request-id", id)
	w.Header().Set("x-amz-id-2", "throttling-proxy")
	w.WriteHeader(p.th.status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>Please reduce your request rate.</Message><RequestId>%s</RequestId><HostId>throttling-proxy</HostId></Error>`,
		p.th.code, id)
}

// reset forgets what was seen and sets the policy: throttle the first `first` arrivals of
// every distinct request, or all if first < 0.
func (p *throttlingProxy) reset(first int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.first = first
	p.seen = map[string][]arrival{}
	p.throttled, p.forwarded = 0, 0
}

func (p *throttlingProxy) stats() (throttled, forwarded int, seen map[string][]arrival) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen = make(map[string][]arrival, len(p.seen))
	for k, v := range p.seen {
		seen[k] = slices.Clone(v)
	}
	return p.throttled, p.forwarded, seen
}

// logCounter counts log records by message and op: the retry wrapper's "backend retry" lines
// and the s3 backend's warnings.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func newLogCounter() *logCounter { return &logCounter{n: map[string]int{}} }

func (c *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *logCounter) WithGroup(string) slog.Handler            { return c }
func (c *logCounter) Handle(_ context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "op" {
			key += " op=" + a.Value.String()
			return false
		}
		return true
	})
	c.mu.Lock()
	c.n[key]++
	c.mu.Unlock()
	return nil
}

func (c *logCounter) total(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.n {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

const throttlePartSize = 5 << 20 // S3's smallest part size, so a multipart Save is 10 MiB

// openThrottled opens the s3 backend on its own bucket of g through a throttling proxy.
func openThrottled(t *testing.T, g *backendtest.VersityGW, th throttle, s3log slog.Handler) (*s3.Backend, *throttlingProxy) {
	t.Helper()
	bucket := "throttle-" + strings.ToLower(th.code) + fmt.Sprint(th.status)
	if strings.Contains(t.Name(), "Forever") {
		bucket += "-forever"
	}
	g.CreateBucket(t, bucket)
	p := startThrottlingProxy(t, g, th)
	b, err := s3.Open(t.Context(), s3.Config{
		Bucket: bucket, Endpoint: p.URL, Region: g.Region, PathStyle: true,
		AccessKey: g.Access, SecretKey: g.Secret,
		PartSize: throttlePartSize, Concurrency: 2,
	}, slog.New(s3log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, p
}

// TestS3Throttling: with S3 throttling the first two attempts of every request, each
// operation through the retry wrapper succeeds with the right data; the proxy saw the
// throttles, the wrapper logged one retry per throttle where one request is one attempt, and
// repetitions of a request are spaced by at least the backoff delay.
func TestS3Throttling(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	for _, th := range throttles {
		t.Run(th.String(), func(t *testing.T) {
			const first = 2
			retries, s3log := newLogCounter(), newLogCounter()
			b, p := openThrottled(t, g, th, s3log)
			cfg := Config{
				MaxAttempts: 30, BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond,
				MaxElapsed: 10 * time.Second, Log: slog.New(retries),
			}
			r := New(b, cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()

			// phase runs one operation with fresh counters and checks that it succeeded, that
			// the proxy throttled at least minThrottles responses, that the wrapper logged
			// wantRetries retries (one per throttle; < 0: at least minRetries), and that
			// repeated requests were spaced by the backoff. It returns what the proxy saw.
			phase := func(name string, minThrottles, wantRetries, minRetries int, f func() error) map[string][]arrival {
				t.Helper()
				p.reset(first)
				before := retries.total("backend retry")
				start := time.Now()
				err := f()
				elapsed := time.Since(start)
				throttled, forwarded, seen := p.stats()
				got := retries.total("backend retry") - before
				if err != nil {
					t.Fatalf("%s: %v (throttled %d, forwarded %d)", name, err, throttled, forwarded)
				}
				if throttled < minThrottles {
					t.Fatalf("%s: the proxy throttled %d responses, want at least %d: the test proves nothing", name, throttled, minThrottles)
				}
				if wantRetries >= 0 && got != wantRetries {
					t.Errorf("%s: %d retries logged, want %d (one per throttled response)", name, got, wantRetries)
				}
				if wantRetries < 0 && got < minRetries {
					t.Errorf("%s: %d retries logged, want at least %d", name, got, minRetries)
				}
				checkBackoff(t, name, cfg, seen)
				t.Logf("%-18s ok in %5v: %2d throttled, %2d forwarded, %2d retries", name,
					elapsed.Round(time.Millisecond), throttled, forwarded, got)
				return seen
			}

			narinfo := []byte("StorePath: /nix/store/aaaa-x\nURL: nar/big.nar\n")
			big := make([]byte, 2*throttlePartSize+1234)
			for i := range big {
				big[i] = byte(rand.Uint32())
			}

			// One PutObject: throttled twice.
			phase("save (put)", first, first, 0, func() error {
				return r.Save(ctx, "a.narinfo", bytes.NewReader(narinfo))
			})
			// Create, three parts and complete, each throttled twice: every throttle fails
			// the attempt (two parts in flight may fail it together), the upload is aborted
			// and tried again, whole, from the rewound reader.
			seen := phase("save (multipart)", 5*first, -1, 3*first, func() error {
				return r.Save(ctx, "nar/big.nar", bytes.NewReader(big))
			})
			var steps []string
			for key, as := range seen {
				if strings.HasPrefix(key, "DELETE ") || strings.Contains(key, "x-id=ListParts") {
					continue // aborts of the failed attempts, and their checks that the upload is gone
				}
				steps = append(steps, key)
				if len(as) <= first {
					t.Errorf("save (multipart): %s arrived %d times, want %d throttled, then forwarded", key, len(as), first)
				}
			}
			if len(steps) != 5 {
				t.Errorf("save (multipart): requests %q, want create, 3 parts, complete", steps)
			}
			phase("stat", first, first, 0, func() error {
				fi, err := r.Stat(ctx, "nar/big.nar")
				if err == nil && (fi.Size != int64(len(big)) || fi.ModTime.IsZero()) {
					err = fmt.Errorf("stat = %+v, want size %d", fi, len(big))
				}
				return err
			})
			var obj backend.Object
			phase("open", first, first, 0, func() error {
				var err error
				obj, err = r.Open(ctx, "nar/big.nar")
				return err
			})
			phase("read", first, first, 0, func() error {
				defer obj.Close()
				h := sha256.New()
				n, err := io.Copy(h, obj)
				if err == nil && (n != int64(len(big)) || !bytes.Equal(h.Sum(nil), sha256Sum(big))) {
					err = fmt.Errorf("read %d bytes, not the %d saved", n, len(big))
				}
				return err
			})
			phase("open+read (small)", 2*first, 2*first, 0, func() error {
				obj, err := r.Open(ctx, "a.narinfo")
				if err != nil {
					return err
				}
				defer obj.Close()
				data, err := io.ReadAll(obj)
				if err == nil && !bytes.Equal(data, narinfo) {
					err = fmt.Errorf("read %q, want %q", data, narinfo)
				}
				return err
			})
			phase("list", first, first, 0, func() error {
				got := map[string]int64{}
				err := r.List(ctx, "", func(fi backend.FileInfo) error {
					got[fi.Name] = fi.Size
					return nil
				})
				want := map[string]int64{"a.narinfo": int64(len(narinfo)), "nar/big.nar": int64(len(big))}
				if err == nil && !mapsEqual(got, want) {
					err = fmt.Errorf("list = %v, want %v", got, want)
				}
				return err
			})
			// HeadObject and DeleteObject, each throttled twice.
			phase("remove", 2*first, 2*first, 0, func() error {
				return r.Remove(ctx, "nar/big.nar")
			})
			phase("remove (small)", 2*first, 2*first, 0, func() error {
				return r.Remove(ctx, "a.narinfo")
			})
			// Throttled, then an honest 404: still ErrNotExist.
			phase("stat (removed)", first, first, 0, func() error {
				if _, err := r.Stat(ctx, "a.narinfo"); !errors.Is(err, backend.ErrNotExist) {
					return fmt.Errorf("stat of a removed object: %v, want ErrNotExist", err)
				}
				return nil
			})
			if n := s3log.total("s3 abort multipart upload failed"); n > 0 {
				t.Logf("%d aborts of failed upload attempts were throttled too, left to the sweeper", n)
			}
		})
	}
}

// checkBackoff: consecutive arrivals of one request are at least the smallest delay the
// policy can draw apart (half the exponential delay, for the jitter), growing with each retry.
// The attempt that sent a request for the k-th time is at least the k-th of its operation, so
// the delay after it is at least that of retry k.
func checkBackoff(t *testing.T, name string, cfg Config, seen map[string][]arrival) {
	t.Helper()
	for key, as := range seen {
		for k := 1; k < len(as); k++ {
			minDelay := min(cfg.BaseDelay<<(k-1), cfg.MaxDelay) / 2
			if gap := as[k].at.Sub(as[k-1].at); gap < minDelay {
				t.Errorf("%s: %s sent again after %v, less than the backoff of retry %d (%v)", name, key, gap, k, minDelay)
			}
		}
	}
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestS3ThrottledForever: with S3 throttling everything, each operation gives up within the
// policy's bound on attempts or time, with an error classified transient (so the HTTP layer
// answers 503 and nix tries again later) that still carries the throttle's status. The SDK does
// not retry on its own: the proxy sees exactly one request per attempt.
func TestS3ThrottledForever(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	for _, th := range throttles {
		t.Run(th.String(), func(t *testing.T) {
			b, p := openThrottled(t, g, th, slog.DiscardHandler)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			// Saved before the throttling starts, to be opened and read during it.
			if err := b.Save(ctx, "a.narinfo", bytes.NewReader([]byte("StorePath: x\n"))); err != nil {
				t.Fatal(err)
			}
			const attempts = 4
			byAttempts := New(b, Config{MaxAttempts: attempts, BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond})
			obj, err := byAttempts.Open(ctx, "a.narinfo") // its reads retry by byAttempts' policy
			if err != nil {
				t.Fatal(err)
			}
			defer obj.Close()
			byTime := New(b, Config{MaxAttempts: 1000, BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond,
				MaxElapsed: 300 * time.Millisecond})
			big := make([]byte, throttlePartSize+1)

			cases := []struct {
				name string
				r    *Backend
				// requests per attempt (-1: not checked), and whether the response had a
				// body to carry the S3 error code (a HEAD answer has none)
				requests int
				hasCode  bool
				// A bound on the time to give up: the policy's delays (at most 70 ms for
				// byAttempts, 300 ms for byTime) and the attempts' own work, with room for a
				// loaded machine under -race, where reading a 5 MiB first part takes a while.
				// The default policy would take up to a minute.
				limit time.Duration
				f     func(r *Backend) error
			}{
				{"stat", byAttempts, 1, false, 5 * time.Second, func(r *Backend) error {
					_, err := r.Stat(ctx, "a.narinfo")
					return err
				}},
				{"open", byAttempts, 1, false, 5 * time.Second, func(r *Backend) error {
					_, err := r.Open(ctx, "a.narinfo")
					return err
				}},
				{"read", byAttempts, 1, true, 5 * time.Second, func(r *Backend) error {
					_, err := obj.Read(make([]byte, 10))
					return err
				}},
				{"save (put)", byAttempts, 1, true, 5 * time.Second, func(r *Backend) error {
					return r.Save(ctx, "b.narinfo", bytes.NewReader([]byte("x")))
				}},
				{"save (multipart)", byAttempts, 1, true, 5 * time.Second, func(r *Backend) error {
					return r.Save(ctx, "nar/big.nar", bytes.NewReader(big))
				}},
				{"list", byAttempts, 1, true, 5 * time.Second, func(r *Backend) error {
					return r.List(ctx, "", func(backend.FileInfo) error { return nil })
				}},
				{"remove", byAttempts, 1, false, 5 * time.Second, func(r *Backend) error {
					return r.Remove(ctx, "a.narinfo")
				}},
				{"stat (time bound)", byTime, -1, false, 3 * time.Second, func(r *Backend) error {
					_, err := r.Stat(ctx, "a.narinfo")
					return err
				}},
				{"save (time bound)", byTime, -1, true, 3 * time.Second, func(r *Backend) error {
					return r.Save(ctx, "b.narinfo", bytes.NewReader([]byte("x")))
				}},
			}
			for _, c := range cases {
				p.reset(-1)
				start := time.Now()
				err := c.f(c.r)
				elapsed := time.Since(start)
				throttled, forwarded, _ := p.stats()
				if err == nil {
					t.Fatalf("%s: succeeded with S3 throttling everything", c.name)
				}
				if !s3.IsTransient(err) {
					t.Errorf("%s: %v is not transient; the HTTP layer would not tell nix to come back", c.name, err)
				}
				if errors.Is(err, backend.ErrNotExist) {
					t.Errorf("%s: %v is ErrNotExist: a throttled lookup would be answered 404", c.name, err)
				}
				if elapsed > c.limit {
					t.Errorf("%s: gave up after %v, want within %v", c.name, elapsed, c.limit)
				}
				if forwarded != 0 {
					t.Errorf("%s: %d requests forwarded while throttling everything", c.name, forwarded)
				}
				if c.requests > 0 {
					if throttled != c.requests*attempts {
						t.Errorf("%s: the proxy throttled %d requests, want %d (%d attempts): does the SDK retry on its own?",
							c.name, throttled, c.requests*attempts, attempts)
					}
					if want := fmt.Sprintf("gave up after %d attempts", attempts); !strings.Contains(err.Error(), want) {
						t.Errorf("%s: %v does not say %q", c.name, err, want)
					}
				} else if throttled < 3 || !strings.Contains(err.Error(), "attempts in") {
					t.Errorf("%s: %v after %d throttled requests; want a give-up on the time bound after several", c.name, err, throttled)
				}
				var se interface{ HTTPStatusCode() int }
				if !errors.As(err, &se) || se.HTTPStatusCode() != th.status {
					t.Errorf("%s: %v does not carry HTTP status %d", c.name, err, th.status)
				}
				code := ""
				var ae smithy.APIError
				if errors.As(err, &ae) {
					code = ae.ErrorCode()
				}
				if c.hasCode && code != th.code {
					t.Errorf("%s: S3 error code %q, want %q", c.name, code, th.code)
				}
				t.Logf("%-18s gave up in %4v after %2d throttled requests (code %q): %v",
					c.name, elapsed.Round(time.Millisecond), throttled, code, err)
			}
		})
	}
}
