package server_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cached-dev/cached/internal/narinfo"
)

// FuzzPutNarInfo PUTs arbitrary bytes as a narinfo. Whatever the body, the answer is never a 5xx
// (nix retries those and stalls), and a narinfo that is accepted is served back parsed and
// correctly signed.
//
//	go test -run '^$' -fuzz FuzzPutNarInfo -fuzztime 20s ./internal/server/
func FuzzPutNarInfo(f *testing.F) {
	tc := newTestCache(f)
	u := newUpload(f, "fuzz", "xz")
	mustStatus(f, "PUT nar", tc.put(f, u.NarPath, u.File), http.StatusOK)
	valid := u.Text()

	f.Add(valid)
	f.Add([]byte(""))
	f.Add([]byte("\n"))
	f.Add([]byte("StorePath: /nix/store/" + u.Hash + "-fuzz\n"))
	f.Add(bytes.ReplaceAll(valid, []byte("\n"), []byte("\r\n")))
	f.Add(valid[:len(valid)-1])                 // no final newline
	f.Add(append(bytes.Clone(valid), valid...)) // every key twice
	f.Add(bytes.Replace(valid, []byte(": "), []byte(":"), 1))
	f.Add(bytes.Replace(valid, []byte("Compression: xz"), []byte("Compression: zstd"), 1))
	f.Add(bytes.Replace(valid, []byte("Compression: xz\n"), nil, 1))
	f.Add(bytes.Replace(valid, []byte("NarSize: "), []byte("NarSize: 0"), 1))
	f.Add(bytes.Replace(valid, []byte("NarSize: "), []byte("NarSize: -"), 1))
	f.Add(bytes.Replace(valid, []byte("NarSize: "), []byte("NarSize: 99999999999999999999"), 1))
	f.Add(bytes.Replace(valid, []byte("sha256:"), []byte("sha512:"), 1))
	f.Add(bytes.Replace(valid, []byte("sha256:"), []byte("sha256-"), 1))
	f.Add(bytes.Replace(valid, []byte("URL: nar/"), []byte("URL: /nar/"), 1))
	f.Add(bytes.Replace(valid, []byte("URL: nar/"), []byte("URL: nar/../"), 1))
	f.Add(bytes.Replace(valid, []byte("URL: nar/"), []byte("URL: http://example.org/nar/"), 1))
	f.Add(append(bytes.Clone(valid), "Sig: x:AAAA\n"...))
	f.Add(append(bytes.Clone(valid), "Sig: test-1:"+base64String(make([]byte, 64))+"\n"...))
	f.Add(append(bytes.Clone(valid), "CA: fixed:r:sha256:"+u.Info.NarHash.String()[7:]+"\n"...))
	f.Add(append(bytes.Clone(valid), "CA: text:sha1:abc\n"...))
	f.Add(append(bytes.Clone(valid), "Unknown-Key: value\n"...))
	f.Add(bytes.Replace(valid, []byte("References: "), []byte("References:  "+u.Hash+"-x  "), 1))
	f.Add(bytes.Replace(valid, []byte("Deriver: "), []byte("Deriver: unknown-deriver\nX: "), 1))
	f.Add(bytes.Replace(valid, []byte("/nix/store/"), []byte("/nix/store/../"), 1))
	f.Add([]byte("\x00\xff\xfe: \n"))

	f.Fuzz(func(t *testing.T, body []byte) {
		hash := u.Hash
		if ni, err := narinfo.Parse(body); err == nil && narinfo.ValidHashPart(ni.HashPart()) {
			hash = ni.HashPart()
		}
		req := httptest.NewRequest(http.MethodPut, "/"+hash+".narinfo", bytes.NewReader(body))
		req.SetBasicAuth("nix", testToken)
		rec := httptest.NewRecorder()
		tc.Handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("PUT narinfo answered %d %q for body %q", rec.Code, rec.Body.String(), body)
		}
		if rec.Code != http.StatusOK {
			return
		}
		req = httptest.NewRequest(http.MethodGet, "/"+hash+".narinfo", nil)
		rec = httptest.NewRecorder()
		tc.Handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("narinfo accepted but GET answers %d %q; body was %q", rec.Code, rec.Body.String(), body)
		}
		tc.parseServed(t, rec.Body.Bytes())
	})
}
