// Package upstream is pull-through: a narinfo the cache lacks is asked of other caches (the
// upstreams, in order), and a NAR that one of them serves is streamed to the client while it is
// stored, so that it is served from the cache from then on.
//
// What it must never do: serve or store a narinfo whose signature does not verify with one of
// the configured upstream keys; commit a NAR that does not hash to what its narinfo says (the
// cache verifies it as it does an upload); send a client a complete-looking answer whose bytes
// did not verify (the last bytes are held back until they have); let a sick upstream cost each
// miss more than its breaker allows.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

// Store is what pull-through stores into: a *cache.Cache.
type Store interface {
	PrepPulled(ni *narinfo.NarInfo) (cache.NarName, error)
	PutPulled(ctx context.Context, ni *narinfo.NarInfo, body io.Reader, verified func()) (bool, error)
	HasNarObject(ctx context.Context, name string) bool
	NarInfo(ctx context.Context, hash string) ([]byte, error)
	// PulledHits are the hits served from what was pulled and stored (narinfo GET/HEAD, NAR
	// downloads).
	PulledHits() (narinfos, nars uint64)
}

// Timeouts bound each request to an upstream.
type Timeouts struct {
	Connect   time.Duration // TCP connect and TLS handshake
	FirstByte time.Duration // from sending the request to the response head
	Idle      time.Duration // longest pause in a body
}

// BreakerConfig says when an upstream is skipped: after Failures failed requests in a row, for
// Cooldown, then one probe at a time.
type BreakerConfig struct {
	Failures int
	Cooldown time.Duration
}

// Config configures pull-through.
type Config struct {
	URLs []string            // tried in order
	Keys []signing.PublicKey // a narinfo must carry a signature by one of them
	// NegativeTTL is how long a path every upstream answered 404 for is answered 404 without
	// asking again.
	NegativeTTL time.Duration
	Timeouts    Timeouts
	Breaker     BreakerConfig
	// Credentials are sent to the upstreams they are for, and only to them.
	Credentials Credentials
	// SpoolDir holds each NAR being pulled while it streams to its clients (deleted as soon as
	// it is opened); "" is os.TempDir().
	SpoolDir string
	Log      *slog.Logger
}

// Defaults for what Config leaves zero.
const (
	DefaultNegativeTTL = time.Minute
	DefaultConnect     = 5 * time.Second
	DefaultFirstByte   = 10 * time.Second
	DefaultIdle        = 30 * time.Second
	DefaultFailures    = 3
	DefaultCooldown    = 30 * time.Second
)

// pendingTTL is how long a pulled narinfo whose NAR nobody fetched is kept: a client that got it
// asks for the NAR within seconds; one asking later gets the narinfo pulled again.
const pendingTTL = time.Hour

// maxPending bounds the narinfos pulled but not stored (about a kilobyte each).
const maxPending = 100000

// Puller answers the cache's misses from its upstreams.
type Puller struct {
	store     Store
	upstreams []*upstream
	keys      []signing.PublicKey
	negTTL    time.Duration
	spoolDir  string
	log       *slog.Logger
	metrics   *metrics
	ctx       context.Context // fetches run under it, not under any one client's request
	stop      context.CancelFunc

	mu        sync.Mutex
	negative  map[string]time.Time  // store hash -> when every upstream said 404
	pending   map[string]*pending   // store hash -> narinfo served, NAR not stored yet
	byNar     map[string][]*pending // NAR object name -> the pending narinfos naming it
	lookups   map[string]*lookup    // store hash -> the upstream lookup in flight
	fetches   map[string]*fetch     // NAR object name -> the download in flight
	fetchDone sync.WaitGroup
}

// pending is a narinfo pulled and served whose NAR is not stored yet.
type pending struct {
	ni       *narinfo.NarInfo // as prepared by the store: URL is nar (the cache's name)
	text     []byte           // what is served
	nar      string
	from     *upstream
	upstrURL string // the NAR's URL at the upstream, relative to its base
	expires  time.Time
}

// New returns a Puller over store. Close stops its downloads.
func New(store Store, cfg Config) (*Puller, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("pull-through needs at least one upstream URL")
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("pull-through needs at least one upstream key: nothing unsigned is ever pulled")
	}
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	t := &cfg.Timeouts
	t.Connect = orDefault(t.Connect, DefaultConnect)
	t.FirstByte = orDefault(t.FirstByte, DefaultFirstByte)
	t.Idle = orDefault(t.Idle, DefaultIdle)
	if cfg.Breaker.Failures <= 0 {
		cfg.Breaker.Failures = DefaultFailures
	}
	cfg.Breaker.Cooldown = orDefault(cfg.Breaker.Cooldown, DefaultCooldown)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Puller{
		store: store, keys: cfg.Keys, negTTL: cfg.NegativeTTL, spoolDir: cfg.SpoolDir, log: cfg.Log,
		negative: map[string]time.Time{}, pending: map[string]*pending{}, byNar: map[string][]*pending{},
		lookups: map[string]*lookup{}, fetches: map[string]*fetch{},
	}
	seen := map[string]bool{}
	for _, raw := range cfg.URLs {
		u, err := newUpstream(raw, cfg.Timeouts, cfg.Breaker, cfg.Credentials)
		if err != nil {
			return nil, err
		}
		if seen[u.base.String()] {
			return nil, fmt.Errorf("upstream %s is given twice", u.name)
		}
		seen[u.base.String()] = true
		p.upstreams = append(p.upstreams, u)
	}
	p.metrics = newMetrics(p)
	p.ctx, p.stop = context.WithCancel(context.Background())
	return p, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Close cancels the downloads in flight and waits for them to end.
func (p *Puller) Close() {
	p.stop()
	p.fetchDone.Wait()
}

// Upstreams are the upstreams' URLs, without credentials, in order.
func (p *Puller) Upstreams() []string {
	out := make([]string, len(p.upstreams))
	for i, u := range p.upstreams {
		out[i] = u.name
	}
	return out
}

// lookup is one narinfo lookup in flight, which concurrent requests for the same hash share.
type lookup struct {
	done chan struct{}
	text []byte
	err  error
}

// NarInfo answers a narinfo the cache lacks: from the narinfos pulled and not stored yet, else
// from the first upstream that has one whose signature verifies. It returns cache.ErrNotFound
// when no upstream has a good one (or none answers: a miss is never made an error by a sick
// upstream). Concurrent requests for one hash make one upstream lookup.
func (p *Puller) NarInfo(ctx context.Context, hash string) ([]byte, error) {
	now := time.Now()
	p.mu.Lock()
	if t, ok := p.negative[hash]; ok && now.Sub(t) < p.negTTL {
		p.mu.Unlock()
		p.metrics.negativeHits.Inc()
		return nil, cache.ErrNotFound
	}
	if pe, ok := p.pending[hash]; ok && now.Before(pe.expires) {
		p.mu.Unlock()
		return pe.text, nil
	}
	l, ok := p.lookups[hash]
	if !ok {
		l = &lookup{done: make(chan struct{})}
		p.lookups[hash] = l
		go func() {
			// Detached from ctx: the others waiting for it must not fail because one went away.
			l.text, l.err = p.lookup(p.ctx, hash)
			p.mu.Lock()
			delete(p.lookups, hash)
			p.mu.Unlock()
			close(l.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-l.done:
		return l.text, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lookup asks the upstreams in order for the narinfo of hash.
func (p *Puller) lookup(ctx context.Context, hash string) ([]byte, error) {
	allMissed := true // every upstream answered, and none with a good narinfo
	for _, u := range p.upstreams {
		ni, err := p.fetchNarInfo(ctx, u, hash)
		switch {
		case err == nil && ni != nil:
			return p.accept(ctx, u, ni)
		case err == nil: // 404
		case errors.Is(err, errBreakerOpen):
			allMissed = false
		default:
			var bad *badNarInfo
			if errors.As(err, &bad) {
				// A definite answer, if a useless one: remembered as a miss like a 404.
				p.log.Warn("upstream narinfo refused", "upstream", u.name, "hash", hash, "reason", bad.reason, "err", bad.err)
			} else {
				allMissed = false
				p.log.Warn("upstream narinfo lookup failed", "upstream", u.name, "hash", hash, "err", err)
			}
		}
	}
	if allMissed {
		p.mu.Lock()
		if len(p.negative) >= maxPending*10 {
			p.negative = map[string]time.Time{}
		}
		p.negative[hash] = time.Now()
		p.mu.Unlock()
	}
	return nil, cache.ErrNotFound
}

// badNarInfo is a narinfo an upstream served that is never used: reason is the metrics label.
type badNarInfo struct {
	reason string // "invalid" (does not parse, or is not for the hash asked), "bad_signature", "unstorable"
	err    error
}

func (e *badNarInfo) Error() string { return e.reason + ": " + e.err.Error() }

// fetchNarInfo gets and checks the narinfo of hash from u: nil, nil for a 404.
func (p *Puller) fetchNarInfo(ctx context.Context, u *upstream, hash string) (*narinfo.NarInfo, error) {
	ctx, stop := context.WithTimeout(ctx, u.small)
	defer stop()
	resp, cancel, found, err := u.get(ctx, hash+".narinfo")
	if err != nil {
		p.metrics.request(u, "narinfo", resultOf(err))
		return nil, err
	}
	if !found {
		p.metrics.request(u, "narinfo", "not_found")
		return nil, nil
	}
	defer cancel()
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, narinfo.MaxSize+1))
	if err != nil {
		p.metrics.request(u, "narinfo", resultOf(err))
		u.breaker.failure(time.Now())
		return nil, fmt.Errorf("upstream %s: reading %s.narinfo: %w", u.name, hash, err)
	}
	ni, err := p.check(hash, body)
	if err != nil {
		var bad *badNarInfo
		if errors.As(err, &bad) {
			p.metrics.request(u, "narinfo", bad.reason)
			p.metrics.refused.WithLabelValues(u.name, bad.reason).Inc()
		}
		return nil, err
	}
	p.metrics.request(u, "narinfo", "ok")
	return ni, nil
}

// check parses an upstream's narinfo for hash and verifies its signature.
func (p *Puller) check(hash string, body []byte) (*narinfo.NarInfo, error) {
	ni, err := narinfo.Parse(body)
	if err != nil {
		return nil, &badNarInfo{"invalid", err}
	}
	if ni.HashPart() != hash {
		return nil, &badNarInfo{"invalid", fmt.Errorf("asked for %s, got %s", hash, ni.StorePath)}
	}
	// The NAR is fetched from the upstream that served the narinfo, never from wherever its URL
	// (which no signature covers) points.
	if ref, err := url.Parse(ni.URL); err != nil || ref.IsAbs() || ref.Host != "" || strings.HasPrefix(ni.URL, "/") {
		return nil, &badNarInfo{"invalid", fmt.Errorf("URL %q of %s is not relative to the upstream", ni.URL, ni.StorePath)}
	}
	fp := ni.Fingerprint()
	for _, sig := range ni.Sigs {
		for _, k := range p.keys {
			if k.Verify(fp, sig) {
				return ni, nil
			}
		}
	}
	names := make([]string, len(p.keys))
	for i, k := range p.keys {
		names[i] = k.Name
	}
	if len(ni.Sigs) == 0 {
		return nil, &badNarInfo{"bad_signature", fmt.Errorf("%s is unsigned; want a signature by one of %v", ni.StorePath, names)}
	}
	return nil, &badNarInfo{"bad_signature", fmt.Errorf("no signature of %s verifies with any of %v", ni.StorePath, names)}
}

// accept makes a checked upstream narinfo the one served: committed at once when its NAR is
// stored already, else pending until a client fetches the NAR.
func (p *Puller) accept(ctx context.Context, u *upstream, ni *narinfo.NarInfo) ([]byte, error) {
	upstrURL := ni.URL
	nn, err := p.store.PrepPulled(ni)
	if err != nil {
		p.metrics.refused.WithLabelValues(u.name, "unstorable").Inc()
		p.log.Warn("upstream narinfo refused", "upstream", u.name, "storePath", ni.StorePath, "reason", "unstorable", "err", err)
		return nil, cache.ErrNotFound
	}
	hash := ni.HashPart()
	if p.store.HasNarObject(ctx, nn.Name) {
		if _, err := p.store.PutPulled(ctx, ni, nil, nil); err != nil {
			p.log.Warn("committing a pulled narinfo whose NAR is stored", "storePath", ni.StorePath, "nar", nn.Name, "err", err)
		} else if text, err := p.store.NarInfo(ctx, hash); err == nil {
			p.log.Info("pulled narinfo; NAR already stored", "upstream", u.name, "storePath", ni.StorePath)
			return text, nil
		}
	}
	pe := &pending{ni: ni, text: ni.Bytes(), nar: nn.Name, from: u, upstrURL: upstrURL, expires: time.Now().Add(pendingTTL)}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) >= maxPending {
		p.expirePending(time.Now())
	}
	if len(p.pending) >= maxPending {
		p.pending, p.byNar = map[string]*pending{}, map[string][]*pending{}
	}
	if old, ok := p.pending[hash]; ok {
		p.dropPendingLocked(old)
	}
	p.pending[hash] = pe
	p.byNar[pe.nar] = append(p.byNar[pe.nar], pe)
	p.log.Info("pulled narinfo", "upstream", u.name, "storePath", ni.StorePath, "nar", nn.Name)
	return pe.text, nil
}

func (p *Puller) expirePending(now time.Time) {
	for _, pe := range p.pending {
		if now.After(pe.expires) {
			p.dropPendingLocked(pe)
		}
	}
}

// dropPendingLocked forgets pe; p.mu is held.
func (p *Puller) dropPendingLocked(pe *pending) {
	if p.pending[pe.ni.HashPart()] == pe {
		delete(p.pending, pe.ni.HashPart())
	}
	list := p.byNar[pe.nar]
	for i, x := range list {
		if x == pe {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.byNar, pe.nar)
	} else {
		p.byNar[pe.nar] = list
	}
}

func resultOf(err error) string {
	var se *statusError
	switch {
	case errors.Is(err, errBreakerOpen):
		return "breaker_open"
	case errors.As(err, &se):
		return fmt.Sprintf("status_%dxx", se.status/100)
	case errors.Is(err, ErrIdle), errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "timeout"):
		return "timeout"
	}
	return "error"
}
