package server

import (
	"html/template"
	"net/http"
)

var landingPage = template.Must(template.New("landing").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cached: Nix binary cache</title></head>
<body>
<h1>Nix binary cache</h1>
<p>Use it from nix by adding to <code>nix.conf</code>:</p>
<pre>substituters = {{.URL}}
trusted-public-keys = {{.Key}}</pre>
<p>Uploads (<code>nix copy --to {{.URL}} PATHS</code>) need a token in a <code>netrc-file</code>.</p>
</body></html>
`))

func (s *Server) landing(w http.ResponseWriter, r *http.Request) {
	url := s.cfg.PublicURL
	if url == "" {
		url = "http://" + r.Host
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	landingPage.Execute(w, struct{ URL, Key string }{url, s.cache.PublicKey().String()})
}
