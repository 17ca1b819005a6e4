package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/netrc"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/cached-dev/cached/internal/upstream"
)

// pullFlags are serve's pull-through flags (package upstream).
type pullFlags struct {
	Upstream                 []string      `help:"Pull-through: a narinfo or NAR this cache lacks is fetched from this cache (http:// or https://), verified, stored and served. Repeatable; tried in order. Needs --upstream-key. Off when empty. A private cache's credentials belong in --upstream-netrc-file or --upstream-token-file (a user:password@ in the URL works too, but puts the password where ps and config files show it)." placeholder:"URL" sep:"none" redact:"userinfo"`
	UpstreamNetrcFile        string        `help:"netrc file (as nix's netrc-file) with upstreams' credentials: an upstream whose host a machine line names (else the default line) is sent its login and password (HTTP basic auth), and no other host is." placeholder:"FILE" type:"path"`
	UpstreamTokenFile        string        `help:"File with a bearer token for the upstream (Authorization: Bearer): the token alone when there is one --upstream, or netrc lines \"machine HOST password TOKEN\" to give each upstream host its own. Wins over --upstream-netrc-file for the same host." placeholder:"FILE" type:"path"`
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
	creds, err := f.credentials()
	if err != nil {
		return nil, err
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
		Breaker:     upstream.BreakerConfig{Failures: f.UpstreamBreakerFailures, Cooldown: f.UpstreamBreakerCooldown},
		Credentials: creds,
		SpoolDir:    spool,
		Log:         log,
	})
}

// credentials reads --upstream-netrc-file and --upstream-token-file. Errors name the file, never
// what it holds.
func (f *pullFlags) credentials() (upstream.Credentials, error) {
	var c upstream.Credentials
	var hosts []string
	for _, raw := range f.Upstream {
		if u, err := url.Parse(raw); err == nil {
			hosts = append(hosts, u.Hostname())
		}
	}
	// matches reports whether entries has one for some upstream's host: a file that gives
	// none of them anything is a mistake worth stopping for.
	matches := func(entries []netrc.Entry) bool {
		for _, h := range hosts {
			if _, ok := netrc.Lookup(entries, h); ok {
				return true
			}
		}
		return false
	}
	if f.UpstreamNetrcFile != "" {
		raw, err := os.ReadFile(f.UpstreamNetrcFile)
		if err != nil {
			return c, fmt.Errorf("--upstream-netrc-file: %w", err)
		}
		if c.Netrc, err = netrc.Parse(string(raw)); err != nil {
			return c, fmt.Errorf("--upstream-netrc-file %s: %w", f.UpstreamNetrcFile, err)
		}
		if !matches(c.Netrc) {
			return c, fmt.Errorf("--upstream-netrc-file %s has no machine line for any upstream host (%s) and no default line", f.UpstreamNetrcFile, strings.Join(hosts, ", "))
		}
	}
	if f.UpstreamTokenFile != "" {
		raw, err := os.ReadFile(f.UpstreamTokenFile)
		if err != nil {
			return c, fmt.Errorf("--upstream-token-file: %w", err)
		}
		data := string(raw)
		if netrc.LooksLikeNetrc(data) {
			if c.Tokens, err = netrc.Parse(data); err != nil {
				return c, fmt.Errorf("--upstream-token-file %s: %w", f.UpstreamTokenFile, err)
			}
			if !matches(c.Tokens) {
				return c, fmt.Errorf("--upstream-token-file %s has no machine line for any upstream host (%s) and no default line", f.UpstreamTokenFile, strings.Join(hosts, ", "))
			}
			return c, nil
		}
		tok := strings.TrimSpace(data)
		switch {
		case tok == "":
			return c, fmt.Errorf("--upstream-token-file %s is empty", f.UpstreamTokenFile)
		case strings.ContainsAny(tok, " \t\r\n"):
			return c, fmt.Errorf("--upstream-token-file %s holds more than one word and is not a netrc file (want the token alone, or lines \"machine HOST password TOKEN\")", f.UpstreamTokenFile)
		case len(f.Upstream) != 1:
			// Sent to every upstream, a company's token would reach cache.nixos.org too.
			return c, fmt.Errorf("--upstream-token-file %s holds a bare token but there are %d upstreams: say which host it is for with netrc lines \"machine HOST password TOKEN\"", f.UpstreamTokenFile, len(f.Upstream))
		case len(hosts) == 1:
			c.Tokens = []netrc.Entry{{Machine: hosts[0], Password: tok}}
		}
	}
	return c, nil
}
