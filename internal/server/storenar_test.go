package server_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/cache"
)

// TestStoreNarURLs: the NAR URLs of nix-serve (/nar/<store hash>-<NarHash>.nar, and its old
// /nar/<store hash>.nar) and harmonia (/nar/<NarHash>.nar?hash=<store hash>) answer with the NAR
// of that store path, uncompressed, as those servers send it: whether the cache stores it
// compressed (decompressed on the fly) or not (sent as stored, with Range). A path that is not
// here, or is here with another NarHash, is a 404 that says so.
func TestStoreNarURLs(t *testing.T) {
	for _, storeAs := range []string{"zstd", "xz", "as-uploaded"} {
		t.Run("stored "+storeAs, func(t *testing.T) {
			// One decompression slot: a request that did not give it back would hang the next.
			tc := newTestCacheWith(t, cache.Options{StoreCompression: storeAs, Recompressions: 1}, nil)
			compression := "bzip2"
			if storeAs == "as-uploaded" {
				compression = "none"
			}
			u := newUpload(t, "served-by-path-"+storeAs, compression)
			u.store(t, tc)
			narHash := nix32(u.Info.NarHash.Digest)
			stored := tc.narinfoOf(t, u).URL
			for _, p := range []string{
				"/nar/" + u.Hash + "-" + narHash + ".nar",
				"/nar/" + u.Hash + ".nar",
				"/nar/" + narHash + ".nar?hash=" + u.Hash,
				"/nar/" + narHash + ".nar?hash=" + u.Hash + "&other=1",
			} {
				r := tc.get(t, p)
				mustStatus(t, "GET "+p, r, http.StatusOK)
				if !bytes.Equal(r.Body, u.NAR) {
					t.Errorf("GET %s: %d bytes that are not the %d-byte NAR", p, len(r.Body), len(u.NAR))
				}
				if cl := r.Header.Get("Content-Length"); cl != strconv.Itoa(len(u.NAR)) {
					t.Errorf("GET %s: Content-Length %q, want %d", p, cl, len(u.NAR))
				}
				if ct := r.Header.Get("Content-Type"); ct != "application/x-nix-nar" {
					t.Errorf("GET %s: Content-Type %q", p, ct)
				}
				if ce := r.Header.Get("Content-Encoding"); ce != "" {
					t.Errorf("GET %s: Content-Encoding %q", p, ce)
				}
				if et := r.Header.Get("ETag"); et != `"`+narHash+`"` {
					t.Errorf("GET %s: ETag %s, want the NarHash", p, et)
				}
				cc := r.Header.Get("Cache-Control")
				if immutable := strings.Contains(cc, "immutable"); immutable != strings.Contains(p, narHash) {
					t.Errorf("GET %s: Cache-Control %q: immutable only when the URL names the NarHash", p, cc)
				}
				h := tc.head(t, p)
				mustStatus(t, "HEAD "+p, h, http.StatusOK)
				if len(h.Body) != 0 || h.Header.Get("Content-Length") != strconv.Itoa(len(u.NAR)) {
					t.Errorf("HEAD %s: %d bytes of body, Content-Length %q", p, len(h.Body), h.Header.Get("Content-Length"))
				}

				// Range: honoured when the NAR is stored uncompressed; otherwise the whole NAR,
				// without Accept-Ranges, so that no client resumes with a Range.
				rr := tc.get(t, p, withHeader("Range", "bytes=8-15"))
				if strings.HasSuffix(stored, ".nar") {
					if ar := r.Header.Get("Accept-Ranges"); ar != "bytes" {
						t.Errorf("GET %s stored uncompressed: Accept-Ranges %q", p, ar)
					}
					mustStatus(t, "GET "+p+" with Range", rr, http.StatusPartialContent)
					if !bytes.Equal(rr.Body, u.NAR[8:16]) {
						t.Errorf("GET %s bytes=8-15: %q, want %q", p, rr.Body, u.NAR[8:16])
					}
				} else {
					if ar := r.Header.Get("Accept-Ranges"); ar != "" {
						t.Errorf("GET %s decompressed on the fly: Accept-Ranges %q", p, ar)
					}
					mustStatus(t, "GET "+p+" with Range", rr, http.StatusOK)
					if !bytes.Equal(rr.Body, u.NAR) {
						t.Errorf("GET %s with a Range: not the whole NAR", p)
					}
				}
			}

			// Not here, or here with another NarHash: a 404 saying which.
			otherHash := nix32(sha256Hash([]byte("another NAR")).Digest)
			absent := storeHash("never uploaded")
			for _, c := range []struct{ path, says string }{
				{"/nar/" + u.Hash + "-" + otherHash + ".nar", "uploaded again"},
				{"/nar/" + otherHash + ".nar?hash=" + u.Hash, "uploaded again"},
				{"/nar/" + absent + "-" + narHash + ".nar", "not in this cache"},
				{"/nar/" + absent + ".nar", "not in this cache"},
				{"/nar/" + narHash + ".nar?hash=" + absent, "not in this cache"},
			} {
				if "/"+stored == strings.Split(c.path, "?")[0] {
					// The NAR stored under the very name asked for: the query changes nothing.
					mustStatus(t, "GET "+c.path, tc.get(t, c.path), http.StatusOK)
					continue
				}
				r := tc.get(t, c.path)
				mustStatus(t, "GET "+c.path, r, http.StatusNotFound)
				if !strings.Contains(string(r.Body), c.says) {
					t.Errorf("GET %s: 404 body %q does not say %q", c.path, r.Body, c.says)
				}
				mustStatus(t, "HEAD "+c.path, tc.head(t, c.path), http.StatusNotFound)
			}
		})
	}
}

// TestNarQueryIgnored: a query on a NAR name the cache stores changes nothing (as for a static
// file server), nor does harmonia's hash= on a compressed name.
func TestNarQueryIgnored(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "query", "zstd")
	u.store(t, tc)
	ni := tc.narinfoOf(t, u)
	for _, q := range []string{"?hash=" + u.Hash, "?hash=" + storeHash("other"), "?hash=bad", "?a=b", "?"} {
		r := tc.get(t, "/"+ni.URL+q)
		mustStatus(t, "GET "+ni.URL+q, r, http.StatusOK)
		if !bytes.Equal(r.Body, u.File) {
			t.Errorf("GET %s%s: not the stored file", ni.URL, q)
		}
	}
	absent := "/nar/" + nix32(sha256Hash([]byte("absent")).Digest) + ".nar.zst?hash=" + u.Hash
	mustStatus(t, "GET "+absent, tc.get(t, absent), http.StatusNotFound)
}

// TestStoreNarURLsRefuseMalformed: a malformed hash in either form is a 400 naming it (or a 404
// for a name no form matches), never a 500.
func TestStoreNarURLsRefuseMalformed(t *testing.T) {
	tc := newTestCacheWith(t, cache.Options{StoreCompression: "as-uploaded"}, nil)
	u := newUpload(t, "malformed", "none")
	u.store(t, tc)
	narHash := nix32(u.Info.NarHash.Digest)
	for _, c := range []struct {
		path   string
		status int
		says   string
	}{
		{"/nar/" + u.Hash[:31] + "-" + narHash + ".nar", http.StatusBadRequest, u.Hash[:31]},
		{"/nar/" + u.Hash + "e-" + narHash + ".nar", http.StatusBadRequest, u.Hash + "e"},
		{"/nar/" + u.Hash + "-" + narHash[:51] + ".nar", http.StatusBadRequest, narHash[:51]},
		{"/nar/" + u.Hash + "-" + strings.Repeat("e", 52) + ".nar", http.StatusBadRequest, strings.Repeat("e", 52)},
		{"/nar/" + u.Hash + "-" + hexString(u.Info.NarHash.Digest) + ".nar", http.StatusBadRequest, "sha256"},
		{"/nar/" + u.Hash + "-" + narHash + ".nar.xz", http.StatusBadRequest, "nar/"},
		{"/nar/" + u.Hash + "-" + narHash + "-x.nar", http.StatusBadRequest, "sha256"},
		{"/nar/" + u.Hash + "-.nar", http.StatusBadRequest, "sha256"},
		{"/nar/-" + narHash + ".nar", http.StatusBadRequest, "store path hash"},
		{"/nar/" + u.Hash + ".narx", http.StatusBadRequest, "nar/"},
		{"/nar/" + strings.Repeat("e", 32) + ".nar", http.StatusBadRequest, "nar/"},
		{"/nar/" + nix32(sha256Hash([]byte("x")).Digest) + ".nar?hash=" + u.Hash[:31], http.StatusBadRequest, "hash="},
		{"/nar/" + nix32(sha256Hash([]byte("x")).Digest) + ".nar?hash=", http.StatusBadRequest, "hash="},
		{"/nar/" + nix32(sha256Hash([]byte("x")).Digest) + ".nar?hash=%00", http.StatusBadRequest, "hash="},
		{"/nar/" + nix32(sha256Hash([]byte("x")).Digest) + ".nar?hash=" + strings.Repeat("a", 5000), http.StatusBadRequest, "hash="},
	} {
		r := tc.get(t, c.path)
		mustStatus(t, "GET "+c.path, r, c.status)
		if !strings.Contains(string(r.Body), c.says) {
			t.Errorf("GET %s: body %q does not say %q", c.path, r.Body, c.says)
		}
		if len(r.Body) > 600 {
			t.Errorf("GET %s: a %d-byte error body", c.path, len(r.Body))
		}
	}
	// A malformed hash= does not hide a NAR stored under the very name asked for.
	p := "/nar/" + narHash + ".nar?hash=bad"
	mustStatus(t, "GET "+p, tc.get(t, p), http.StatusOK)
}

// TestStoreNarURLGoneClientGivesBackSlot: a client that stops reading a NAR being decompressed
// for it and goes away gives its decompression slot back; the next request gets it.
func TestStoreNarURLGoneClientGivesBackSlot(t *testing.T) {
	tc := newTestCacheWith(t, cache.Options{Recompressions: 1}, nil)
	// 32 MiB that compress to little: far more than the socket buffers hold, under the test's
	// upload limit.
	seed := make([]byte, 4096)
	rand.NewChaCha8([32]byte{1}).Read(seed)
	big := bytes.Repeat(seed, 8<<10)
	u := newUploadNAR(t, "gone-client", "zstd", handNAR("nix-archive-1", "(", "type", "regular", "contents", string(big), ")"))
	u.store(t, tc)
	p := "/nar/" + u.Hash + "-" + nix32(u.Info.NarHash.Digest) + ".nar"

	c, err := net.Dial("tcp", tc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: cache\r\n\r\n", p)
	head := make([]byte, 4096)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) {
		t.Fatalf("first answer: %.100q", head)
	}
	c.Close()

	// With a deadline: a request still waiting for the slot when it passes is given up, which
	// lets the server's handler return and the test end.
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(tc.URL + p)
	if err != nil {
		t.Fatalf("second GET: %v: did the gone client keep the only decompression slot?", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, u.NAR) {
		t.Errorf("second GET: %s, %d bytes (%v), want the %d-byte NAR", resp.Status, len(body), err, len(u.NAR))
	}
}
