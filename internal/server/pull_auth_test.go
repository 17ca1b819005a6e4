package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/netrc"
	"github.com/cached-dev/cached/internal/server"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/cached-dev/cached/internal/upstream"
)

// demandAuth makes up a private cache: a request whose Authorization is not want gets a 401. It
// returns the Authorization headers up received.
func demandAuth(up *fileUpstream, want string) func() []string {
	var (
		mu   sync.Mutex
		seen []string
	)
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") == want {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="private cache"`)
		http.Error(w, "credentials wanted", http.StatusUnauthorized)
		return true
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func basicHeader(user, pw string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, pw)
	return r.Header.Get("Authorization")
}

// A private upstream (401 without credentials): without them a miss is an upstream failure,
// never remembered as a 404; with netrc credentials, a bearer token or a URL's user:password@,
// the path is pulled, and every request to the upstream carried them.
func TestPullThroughPrivateUpstreamCredentials(t *testing.T) {
	host := func(up *fileUpstream) string { u, _ := url.Parse(up.srv.URL); return u.Hostname() }

	t.Run("none", func(t *testing.T) {
		up := newFileUpstream(t)
		seen := demandAuth(up, basicHeader("ci", "s3cret"))
		u := newUpload(t, "private-none", "xz")
		up.publish(t, u)
		c := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, up.srv.URL)
		for range 2 {
			mustStatus(t, "GET narinfo without credentials", c.get(t, u.NarInfoPath()), http.StatusNotFound)
		}
		// Not remembered as a miss: the second request asked again.
		if n := up.count(u.NarInfoPath()); n != 2 {
			t.Fatalf("upstream asked %d times, want 2 (a 401 is no 404 to remember)", n)
		}
		if got := seen(); got[0] != "" {
			t.Fatalf("sent Authorization %q with no credentials configured", got[0])
		}
		m := string(c.get(t, "/metrics").Body)
		if want := `cached_upstream_requests_total{kind="narinfo",result="status_4xx",upstream="` + up.srv.URL + `/"} 2`; !strings.Contains(m, want) {
			t.Fatalf("metrics lack %s", want)
		}
		if strings.Contains(m, `result="not_found"`) {
			t.Fatalf("a 401 was counted as not_found")
		}
	})

	// Wrong credentials in the URL: refused like none, and the failures logged without them.
	t.Run("wrong password in the URL", func(t *testing.T) {
		up := newFileUpstream(t)
		demandAuth(up, basicHeader("ci", "s3cret"))
		u := newUpload(t, "private-wrong", "xz")
		up.publish(t, u)
		withPw, _ := url.Parse(up.srv.URL)
		withPw.User = url.UserPassword("ci", "wr0ng-pw")
		c := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, withPw.String())
		mustStatus(t, "GET narinfo with a wrong password", c.get(t, u.NarInfoPath()), http.StatusNotFound)
		logs := c.logs.String()
		if !strings.Contains(logs, "status 401") {
			t.Fatalf("the 401 was not logged:\n%s", logs)
		}
		if m := string(c.get(t, "/metrics").Body); strings.Contains(logs+m, "wr0ng-pw") {
			t.Fatalf("the password shows in the log or the metrics:\n%s", logs)
		}
	})

	for _, tc := range []struct {
		name string
		want string // the Authorization the upstream demands
		edit func(up *fileUpstream, pc *upstream.Config)
	}{
		{"netrc", basicHeader("ci", "s3cret"), func(up *fileUpstream, pc *upstream.Config) {
			pc.Credentials.Netrc = []netrc.Entry{{Machine: "elsewhere.example", Login: "no", Password: "no"}, {Machine: host(up), Login: "ci", Password: "s3cret"}}
		}},
		{"netrc default", basicHeader("ci", "s3cret"), func(up *fileUpstream, pc *upstream.Config) {
			pc.Credentials.Netrc = []netrc.Entry{{Machine: "elsewhere.example", Login: "no", Password: "no"}, {Login: "ci", Password: "s3cret"}}
		}},
		{"bearer", "Bearer tok-123", func(up *fileUpstream, pc *upstream.Config) {
			pc.Credentials.Tokens = []netrc.Entry{{Machine: host(up), Password: "tok-123"}}
			pc.Credentials.Netrc = []netrc.Entry{{Machine: host(up), Login: "ci", Password: "loses"}} // the token wins
		}},
		{"URL userinfo", basicHeader("ci", "s3cret"), func(up *fileUpstream, pc *upstream.Config) {
			u, _ := url.Parse(up.srv.URL)
			u.User = url.UserPassword("ci", "s3cret")
			pc.URLs = []string{u.String()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newFileUpstream(t)
			seen := demandAuth(up, tc.want)
			u := newUpload(t, "private-"+strings.ReplaceAll(tc.name, " ", "-"), "xz")
			up.publish(t, u)
			c := newPullCache(t, []signing.PublicKey{up.key.Public()}, func(pc *upstream.Config) { tc.edit(up, pc) }, up.srv.URL)
			ni := c.narinfoOf(t, u)
			checkPulledNar(t, c, ni, u)
			committedNarInfo(t, c, u)
			got := seen()
			if len(got) < 2 {
				t.Fatalf("upstream got %d requests, want the narinfo and the NAR", len(got))
			}
			for _, a := range got {
				if a != tc.want {
					t.Fatalf("upstream got Authorization %q, want %q on every request", a, tc.want)
				}
			}
			if m := string(c.get(t, "/metrics").Body); strings.Contains(m, "s3cret") || strings.Contains(m, "tok-123") {
				t.Fatalf("metrics show a credential")
			}
		})
	}
}

// Credentials go to their upstream's host only: not to another upstream, and not to a host the
// upstream redirects to (a CDN in front of its NARs).
func TestPullThroughCredentialsStayWithTheirHost(t *testing.T) {
	cdn := newFileUpstream(t)
	cdnSeen := demandAuth(cdn, "") // answers only requests without credentials
	private := newFileUpstream(t)
	u := newUpload(t, "via-cdn", "xz")
	private.publish(t, u)
	cdn.write(t, u.Info.URL, u.File)
	// private redirects its NARs to the CDN, named by another host name for the same loopback.
	cdnURL, _ := url.Parse(cdn.srv.URL)
	cdnURL.Host = "localhost:" + cdnURL.Port()
	privSeen := demandAuth(private, "Bearer tok-123")
	inner := *private.fault.Load()
	private.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if inner(w, r) {
			return true
		}
		if strings.HasPrefix(r.URL.Path, "/nar/") {
			http.Redirect(w, r, cdnURL.String()+r.URL.Path, http.StatusFound)
			return true
		}
		return false
	})
	other := newFileUpstream(t) // first in order, lacks the path: must see no token
	otherSeen := demandAuth(other, "")
	privHost, _ := url.Parse(private.srv.URL)
	c := newPullCache(t, []signing.PublicKey{private.key.Public()}, func(pc *upstream.Config) {
		pc.Credentials.Tokens = []netrc.Entry{{Machine: privHost.Hostname(), Password: "tok-123"}}
	}, strings.Replace(other.srv.URL, "127.0.0.1", "localhost", 1), private.srv.URL)

	ni := c.narinfoOf(t, u)
	checkPulledNar(t, c, ni, u)
	if n := cdn.count("/" + u.Info.URL); n != 1 {
		t.Fatalf("the CDN got %d GETs of the NAR, want 1 (the redirect followed)", n)
	}
	for name, seen := range map[string][]string{"the CDN": cdnSeen(), "the other upstream": otherSeen()} {
		for _, a := range seen {
			if a != "" {
				t.Fatalf("%s got Authorization %q", name, a)
			}
		}
	}
	for _, a := range privSeen() {
		if a != "Bearer tok-123" {
			t.Fatalf("the private upstream got Authorization %q", a)
		}
	}
}

// Hits on pulled paths are counted: narinfo GET/HEAD once stored (the pulled narinfo the
// puller served is not), and every download of a pulled NAR object (the one that pulled it
// included: it is recorded like any download); hits on uploaded paths are not.
func TestPullThroughPulledHitsMetric(t *testing.T) {
	up := newFileUpstream(t)
	pulled := newUpload(t, "hit-pulled", "xz")
	up.publish(t, pulled)
	var store *cache.Cache
	c := newTestCacheConfig(t, func(cfg *server.Config) {
		store = cfg.Cache
		p, err := upstream.New(cfg.Cache, upstream.Config{
			URLs: []string{up.srv.URL}, Keys: []signing.PublicKey{up.key.Public()}, SpoolDir: t.TempDir(), Log: cfg.Log,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		cfg.Puller = p
	})
	uploaded := newUpload(t, "hit-uploaded", "xz")
	uploaded.store(t, c)

	ni := c.narinfoOf(t, pulled) // pulled: not a hit on a stored path
	checkPulledNar(t, c, ni, pulled)
	committedNarInfo(t, c, pulled) // a hit (with the write token)
	for range 2 {
		mustStatus(t, "GET pulled narinfo", c.get(t, pulled.NarInfoPath()), http.StatusOK)
	}
	mustStatus(t, "HEAD pulled narinfo", c.head(t, pulled.NarInfoPath()), http.StatusOK)
	mustStatus(t, "GET pulled NAR", c.get(t, "/"+ni.URL), http.StatusOK)
	for range 3 {
		mustStatus(t, "GET uploaded narinfo", c.get(t, uploaded.NarInfoPath()), http.StatusOK)
	}
	mustStatus(t, "GET uploaded NAR", c.get(t, "/"+c.narinfoOf(t, uploaded).URL), http.StatusOK)
	if err := store.FlushAccess(); err != nil {
		t.Fatal(err)
	}
	m := string(c.get(t, "/metrics").Body)
	for _, want := range []string{`cached_pulled_hits_total{kind="narinfo"} 4`, `cached_pulled_hits_total{kind="nar"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "cached_pulled_hits_total"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
