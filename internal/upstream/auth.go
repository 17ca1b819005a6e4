package upstream

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/cached-dev/cached/internal/netrc"
)

// Credentials are secrets for upstreams that want them (private caches), chosen by each
// upstream's host name. An upstream gets one kind: the user:password@ of its URL, else the bearer
// token of its host, else the netrc login and password of its host.
type Credentials struct {
	// Netrc is read as nix reads its netrc-file: the entry whose machine is the host, else the
	// default entry; sent as HTTP basic auth.
	Netrc []netrc.Entry
	// Tokens holds bearer tokens (Authorization: Bearer): the password of the entry whose
	// machine is the host, else of the default entry.
	Tokens []netrc.Entry
}

// authHeader is the Authorization value for one upstream; "" sends none.
type authHeader string

// credentialsFor picks u's credentials.
func credentialsFor(u *url.URL, c Credentials) authHeader {
	if u.User != nil {
		pw, _ := u.User.Password()
		return basic(u.User.Username(), pw)
	}
	host := u.Hostname()
	if e, ok := netrc.Lookup(c.Tokens, host); ok && e.Password != "" {
		return authHeader("Bearer " + e.Password)
	}
	if e, ok := netrc.Lookup(c.Netrc, host); ok && (e.Login != "" || e.Password != "") {
		return basic(e.Login, e.Password)
	}
	return ""
}

func basic(user, pw string) authHeader {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, pw)
	return authHeader(r.Header.Get("Authorization"))
}

// authTransport adds an upstream's credentials to the requests that go to its scheme and host
// (host and port), and to no other: a redirect elsewhere (a CDN, a presigned S3 URL) gets none.
// Set here rather than on the request, http.Client's redirect rules never copy them.
type authTransport struct {
	next         http.RoundTripper
	scheme, host string
	auth         authHeader
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.auth == "" || !strings.EqualFold(req.URL.Scheme, t.scheme) || !strings.EqualFold(req.URL.Host, t.host) {
		return t.next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", string(t.auth))
	return t.next.RoundTrip(r)
}

// RedactURL is raw for logs, errors and printed configurations: the password of its
// user:password@ replaced by <redacted>. A value that does not parse as a URL but has an "@"
// (it may hold credentials) is replaced whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if strings.Contains(raw, "@") {
			return "<redacted>"
		}
		return raw
	}
	if u.User == nil {
		if strings.Contains(u.Opaque, "@") { // "host:user:password@..." parses as scheme and opaque
			return "<redacted>"
		}
		return raw
	}
	if _, ok := u.User.Password(); !ok {
		return raw
	}
	u.User = url.UserPassword(u.User.Username(), "xxxxx")
	return strings.Replace(u.String(), ":xxxxx@", ":<redacted>@", 1)
}
