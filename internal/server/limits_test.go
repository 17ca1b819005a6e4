package server_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/server"
	"github.com/cached-dev/cached/internal/signing"
)

// TestRequireUploadSigs: with --require-upload-sigs, unsigned narinfos and narinfos signed by
// another key are refused with 400 naming Sig; one signed by a trusted builder key is accepted.
func TestRequireUploadSigs(t *testing.T) {
	builder, _ := signing.Generate("builder-1")
	other, _ := signing.Generate("other-1")
	tc := newTestCacheWith(t, cache.Options{UploadKeys: []signing.PublicKey{builder.Public()}}, nil)

	for _, tt := range []struct {
		name string
		sign *signing.SecretKey
		want int
	}{
		{"unsigned", nil, http.StatusBadRequest},
		{"wrong key", &other, http.StatusBadRequest},
		{"trusted key", &builder, http.StatusOK},
	} {
		u := newUpload(t, "sigs-"+strings.ReplaceAll(tt.name, " ", "-"), "zstd")
		if tt.sign != nil {
			u.Info.Sigs = []string{tt.sign.Sign(u.Info.Fingerprint())}
		}
		mustStatus(t, tt.name+": PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
		resp := tc.put(t, u.NarInfoPath(), u.Text())
		mustStatus(t, tt.name+": PUT narinfo", resp, tt.want)
		if tt.want == http.StatusBadRequest && !strings.Contains(string(resp.Body), "Sig") {
			t.Errorf("%s: refusal does not name Sig: %q", tt.name, resp.Body)
		}
		wantGet := http.StatusNotFound
		if tt.want == http.StatusOK {
			wantGet = http.StatusOK
		}
		mustStatus(t, tt.name+": GET narinfo", tc.get(t, u.NarInfoPath()), wantGet)
	}
}

// TestStalledUploadIsCut: an upload whose body stops arriving is answered 408 after the idle
// timeout and leaves nothing; the server keeps serving others meanwhile.
func TestStalledUploadIsCut(t *testing.T) {
	tc := newTestCacheWith(t, cache.Options{}, func(c *server.Config) { c.BodyIdleTimeout = 500 * time.Millisecond })
	u := newUpload(t, "stalled", "none")
	conn, err := net.Dial("tcp", tc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", u.NarPath, testToken, len(u.File))
	conn.Write(u.File[:len(u.File)/2]) // then nothing

	// Others are served while it stalls.
	mustStatus(t, "GET nix-cache-info during a stalled upload", tc.get(t, "/nix-cache-info"), http.StatusOK)

	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled upload: %v", err)
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled upload: %d, want 408", resp.StatusCode)
	}
	mustStatus(t, "HEAD of the stalled NAR", tc.head(t, u.NarPath), http.StatusNotFound)
}

// TestWriteRateLimit: beyond the per-client limit, writes get 429 (which nix retries); reads
// are not limited.
func TestWriteRateLimit(t *testing.T) {
	tc := newTestCacheWith(t, cache.Options{}, func(c *server.Config) { c.WriteRateLimit = 3 })
	got := map[int]int{}
	for i := 0; i < 5; i++ {
		got[tc.put(t, "/log/"+strings.Repeat("a", 32)+"-x.drv", []byte("log")).Status]++
	}
	if got[http.StatusOK] != 3 || got[http.StatusTooManyRequests] != 2 {
		t.Fatalf("5 writes with a limit of 3/min: %v", got)
	}
	for i := 0; i < 10; i++ {
		mustStatus(t, "read under a write limit", tc.get(t, "/nix-cache-info"), http.StatusOK)
	}
}
