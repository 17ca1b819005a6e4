package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cached-dev/cached/internal/signing"
	"github.com/cached-dev/cached/internal/upstream"
)

// pullFlags are serve's pull-through flags (package upstream).
type pullFlags struct {
	Upstream                 []string      `help:"Pull-through: a narinfo or NAR this cache lacks is fetched from this cache (http:// or https://, credentials as user:password@ if it needs them), verified, stored and served. Repeatable; tried in order. Needs --upstream-key. Off when empty." placeholder:"URL" sep:"none"`
	UpstreamKey              []string      `help:"Public key (name:base64) whose signature makes an upstream's narinfo trusted, e.g. cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=. Repeatable or comma-separated. A narinfo no such key signed is never served nor stored." placeholder:"NAME:BASE64" sep:","`
	UpstreamNegativeTTL      time.Duration `help:"How long a path every upstream answered 404 for is answered 404 without asking them again." default:"1m"`
	UpstreamConnectTimeout   time.Duration `help:"Bound on connecting to an upstream (TCP and TLS)." default:"5s"`
	UpstreamFirstByteTimeout time.Duration `help:"Bound on waiting for an upstream's answer to begin." default:"10s"`
	UpstreamIdleTimeout      time.Duration `help:"Bound on a pause in an upstream's body; a NAR download that stalls this long fails (its clients see a cut connection)." default:"30s"`
	UpstreamBreakerFailures  int           `help:"Failed requests in a row after which an upstream is skipped (misses cost nothing) for --upstream-breaker-cooldown, then probed one request at a time." default:"3"`
	UpstreamBreakerCooldown  time.Duration `help:"How long an upstream whose breaker opened is skipped before it is probed again." default:"30s"`
}

// puller returns the pull-through of the flags over store, or nil when no upstream is given.
func (f *pullFlags) puller(store upstream.Store, data string, log *slog.Logger) (*upstream.Puller, error) {
	if len(f.Upstream) == 0 {
		if len(f.UpstreamKey) > 0 {
			return nil, fmt.Errorf("--upstream-key without --upstream: no upstream to trust")
		}
		return nil, nil
	}
	if len(f.UpstreamKey) == 0 {
		return nil, fmt.Errorf("--upstream needs --upstream-key: the keys whose signatures make an upstream's narinfos trusted (e.g. cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=)")
	}
	var keys []signing.PublicKey
	for _, k := range f.UpstreamKey {
		pk, err := signing.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("--upstream-key: %w", err)
		}
		keys = append(keys, pk)
	}
	for name, d := range map[string]time.Duration{
		"--upstream-negative-ttl": f.UpstreamNegativeTTL, "--upstream-connect-timeout": f.UpstreamConnectTimeout,
		"--upstream-first-byte-timeout": f.UpstreamFirstByteTimeout, "--upstream-idle-timeout": f.UpstreamIdleTimeout,
		"--upstream-breaker-cooldown": f.UpstreamBreakerCooldown,
	} {
		if d <= 0 {
			return nil, fmt.Errorf("%s %s: want more than 0", name, d)
		}
	}
	if f.UpstreamBreakerFailures < 1 {
		return nil, fmt.Errorf("--upstream-breaker-failures %d: want 1 or more", f.UpstreamBreakerFailures)
	}
	spool := filepath.Join(data, "pull-spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("pull spool directory: %w", err)
	}
	return upstream.New(store, upstream.Config{
		URLs:        f.Upstream,
		Keys:        keys,
		NegativeTTL: f.UpstreamNegativeTTL,
		Timeouts: upstream.Timeouts{
			Connect: f.UpstreamConnectTimeout, FirstByte: f.UpstreamFirstByteTimeout, Idle: f.UpstreamIdleTimeout,
		},
		Breaker:  upstream.BreakerConfig{Failures: f.UpstreamBreakerFailures, Cooldown: f.UpstreamBreakerCooldown},
		SpoolDir: spool,
		Log:      log,
	})
}
