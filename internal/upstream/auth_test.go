package upstream

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/netrc"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://cache.nixos.org", "https://cache.nixos.org"},
		{"https://ci:s3cret@cache.corp.example/nix", "https://ci:<redacted>@cache.corp.example/nix"},
		{"https://ci:@cache.corp.example", "https://ci:<redacted>@cache.corp.example"},
		{"https://ci@cache.corp.example", "https://ci@cache.corp.example"},
		{"http://ci:s3cret@[::1:bad", "<redacted>"},
		{"not a url at all", "not a url at all"},
		{"cache.corp.example:ci:s3cret@x", "<redacted>"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Which credentials an upstream gets: the URL's, else its host's token, else its host's netrc
// entry; and the transport sends them to that scheme and host only.
func TestCredentialsFor(t *testing.T) {
	creds := Credentials{
		Netrc:  []netrc.Entry{{Machine: "a.example", Login: "u", Password: "p"}, {Machine: "b.example", Login: "v", Password: "q"}},
		Tokens: []netrc.Entry{{Machine: "b.example", Password: "tok"}},
	}
	for _, tc := range []struct{ url, want string }{
		{"https://a.example:8443/", basic("u", "p").String()},
		{"https://B.example/", "Bearer tok"},
		{"https://x:y@b.example/", basic("x", "y").String()},
		{"https://c.example/", ""},
	} {
		u, _ := url.Parse(tc.url)
		if got := string(credentialsFor(u, creds)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.url, got, tc.want)
		}
	}

	var got []string
	tr := &authTransport{next: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = append(got, r.Header.Get("Authorization"))
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}), scheme: "https", host: "a.example:8443", auth: "Bearer tok"}
	for _, target := range []string{"https://a.example:8443/x", "http://a.example:8443/x", "https://a.example/x", "https://evil.example/x"} {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		tr.RoundTrip(req)
		if req.Header.Get("Authorization") != "" {
			t.Fatalf("the transport changed the caller's request")
		}
	}
	if strings.Join(got, ",") != "Bearer tok,,," {
		t.Fatalf("Authorization sent: %q, want it for https://a.example:8443 only", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (a authHeader) String() string { return string(a) }

// FuzzRedactURL: whatever the input, a URL with a password comes out with it replaced, one
// without comes out as it went in, and a non-URL with an "@" is hidden whole.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"https://u:p@h/x", "http://h", "https://u@h", "http://u:p@[::1", "x@y", "https://u:p%40q@h:1/p?q#f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out := RedactURL(raw)
		u, err := url.Parse(raw)
		if err != nil {
			if strings.Contains(raw, "@") && out != "<redacted>" {
				t.Fatalf("%q does not parse, has an @, and came out as %q", raw, out)
			}
			return
		}
		pw, has := "", false
		if u.User != nil {
			pw, has = u.User.Password()
		}
		if u.User == nil && strings.Contains(u.Opaque, "@") {
			if out != "<redacted>" {
				t.Fatalf("%q (opaque %q) came out as %q", raw, u.Opaque, out)
			}
			return
		}
		if !has {
			if out != raw {
				t.Fatalf("%q has no password but came out as %q", raw, out)
			}
			return
		}
		back, err := url.Parse(strings.Replace(out, ":<redacted>@", ":x@", 1))
		if err != nil {
			t.Fatalf("%q came out as %q, which does not parse: %v", raw, out, err)
		}
		if back.User == nil {
			t.Fatalf("%q (password %q) came out as %q, without its user", raw, pw, out)
		}
		if got, _ := back.User.Password(); got != "x" {
			t.Fatalf("%q came out as %q, password %q", raw, out, got)
		}
	})
}
