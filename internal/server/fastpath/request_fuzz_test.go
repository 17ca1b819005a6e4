package fastpath

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// FuzzParseRequest holds the fast path's parser to net/http's: whatever it accepts, net/http
// must parse as the same GET or HEAD of the same narinfo or NAR, with no body, one Host and the
// same Connection: close, and for a NAR without Range or If-* headers; and it never panics.
func FuzzParseRequest(f *testing.F) {
	const p = "/0mi1kxrmw4kxpjv3p3vmvkd8yg0dk25s.narinfo"
	const nar = "/nar/1b0fdrgxak6g2y95vkhw9ljhmf3c8q4kd9l2jh7lmqwcrdiniq3d.nar"
	for _, seed := range []string{
		"GET " + p + " HTTP/1.1\r\nHost: cache\r\n\r\n",
		"HEAD " + p + " HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: curl/7.88.1 Nix/2.8.0\r\nAccept: */*\r\n\r\n",
		"GET " + p + " HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nIf-None-Match: \"x\"\r\n\r\n",
		"GET " + p + " HTTP/1.1\r\nHost: a\r\nX-Request-Id: r-1\r\n\r\n",
		"GET " + p + " HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"GET " + p + "?a HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET " + p + " HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
		"GET " + nar + " HTTP/1.1\r\nHost: cache\r\n\r\n",
		"HEAD " + nar + ".xz HTTP/1.1\r\nHost: cache\r\nConnection: close\r\n\r\n",
		"GET " + nar + ".zst HTTP/1.1\r\nHost: cache\r\nRange: bytes=1-2\r\n\r\n",
		"GET " + nar + ".bz2 HTTP/1.1\r\nHost: cache\r\nIf-Modified-Since: x\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		var r Request
		if !parseRequest(head, &r) {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("fast path accepted %q, net/http refuses it: %v", head, err)
		}
		wantMethod := http.MethodGet
		if r.Head {
			wantMethod = http.MethodHead
		}
		switch {
		case req.Method != wantMethod:
			t.Fatalf("%q: method %q, net/http %q", head, wantMethod, req.Method)
		case req.URL.Path != string(r.Path) || req.URL.RawQuery != "" || req.URL.RawPath != "":
			t.Fatalf("%q: path %q, net/http %q", head, r.Path, req.URL)
		case req.ContentLength != 0 || len(req.TransferEncoding) > 0:
			t.Fatalf("%q: net/http sees a body", head)
		case req.Host == "":
			t.Fatalf("%q: net/http sees no Host", head)
		case req.Close != r.Close:
			t.Fatalf("%q: close %v, net/http %v", head, r.Close, req.Close)
		case len(req.Header["If-None-Match"]) > 1:
			t.Fatalf("%q: several If-None-Match", head)
		case req.Header.Get("If-None-Match") != string(r.IfNoneMatch):
			t.Fatalf("%q: If-None-Match %q, net/http %q", head, r.IfNoneMatch, req.Header.Get("If-None-Match"))
		}
		if r.NAR { // a NAR is answered whole: nothing http.ServeContent would look at
			for k := range req.Header {
				if k == "Range" || strings.HasPrefix(k, "If-") {
					t.Fatalf("%q: NAR answered whole, net/http sees %s", head, k)
				}
			}
		}
	})
}
