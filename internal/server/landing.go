package server

import (
	"bytes"
	"context"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dustin/go-humanize"
)

// The landing page tells a person who opens the cache in a browser how to use it. Every value on
// it goes through html/template: the URL can come from the request's Host header.

var landingPage = template.Must(template.New("landing").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nix binary cache</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
pre, code { font-family: ui-monospace, monospace; }
pre { background: #f3f3f3; padding: .7em 1em; overflow-x: auto; }
dt { font-weight: bold; }
</style>
</head><body>
<h1>Nix binary cache</h1>
<p>This is a Nix binary cache at <code id="cache-url">{{.URL}}</code>.</p>
<dl>
<dt>Public key</dt><dd><code id="public-key">{{.Key}}</code></dd>
{{- if .Counted}}
<dt>Store paths</dt><dd id="store-paths">{{.Paths}}</dd>
<dt>Stored NARs</dt><dd id="stored-bytes" data-bytes="{{.Bytes}}">{{.HumanBytes}}</dd>
{{- else}}
<dt>Store paths</dt><dd id="store-paths">still counting, reload in a moment</dd>
{{- end}}
</dl>

<h2>Substitute from it</h2>
<p>Add to <code>nix.conf</code> (<code>/etc/nix/nix.conf</code>, or <code>~/.config/nix/nix.conf</code> for a trusted user):</p>
<pre id="nix-conf">substituters = {{.URL}}
trusted-public-keys = {{.Key}}</pre>
<p>To keep cache.nixos.org as well, use <code>extra-substituters</code> and <code>extra-trusted-public-keys</code> instead.</p>

<h2>Upload to it</h2>
<p>Uploads need a token from the cache's operator. Put this line in a netrc file, with the token in
place of <code>TOKEN</code> (the login is ignored), and set <code>netrc-file = /path/to/netrc</code>
in <code>nix.conf</code>:</p>
<pre id="netrc">machine {{.Host}} login cached password TOKEN</pre>
<p>then upload store paths with</p>
<pre id="nix-copy">nix copy --to '{{.URL}}?compression=zstd' /nix/store/...</pre>
<p>(zstd: without it nix compresses with xz, which is several times slower to compress and to
check on arrival.)</p>
</body></html>
`))

// landingData is what the page shows.
type landingData struct {
	URL, Key, Host string
	Counted        bool
	Paths          int64
	Bytes          uint64
	HumanBytes     string
}

// landingCountWait is how long a page view waits for the very first count of a fresh server;
// after that the counts come from the background-refreshed cache at once.
const landingCountWait = 2 * time.Second

func (s *Server) landing(w http.ResponseWriter, r *http.Request) {
	d := landingData{URL: s.cfg.PublicURL, Host: "HOST"}
	for i, k := range s.cache.PublicKeys() { // every current key, the primary first
		if i > 0 {
			d.Key += " "
		}
		d.Key += k.String()
	}
	if d.URL == "" {
		scheme := "http://"
		if r.TLS != nil {
			scheme = "https://"
		}
		d.URL = scheme + r.Host
	}
	if u, err := url.Parse(d.URL); err == nil && u.Hostname() != "" {
		d.Host = u.Hostname() // netrc matches the host name alone, without the port
	}
	ctx, cancel := context.WithTimeout(r.Context(), landingCountWait)
	defer cancel()
	if st := s.obs.stats.Stats(ctx); !st.CountedAt.IsZero() {
		d.Counted, d.Paths, d.Bytes, d.HumanBytes = true, st.StorePaths, st.NarBytes, humanize.IBytes(st.NarBytes)
	}

	var buf bytes.Buffer
	if err := landingPage.Execute(&buf, d); err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	h.Set("Cache-Control", "no-cache")
	// Nothing on the page runs or loads anything; say so, in case something ever slips through.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(buf.Bytes())
}
