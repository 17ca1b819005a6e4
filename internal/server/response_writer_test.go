package server_test

// NAR bodies go out through the ResponseWriter's io.ReaderFrom when it has one (sendfile). These
// tests serve NARs to writers that do not have it: net/http's HTTP/2 writer (any TLS listener)
// and httptest.ResponseRecorder.

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

func TestGetNarOverHTTP2(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "h2", "xz")
	u.store(t, tc)
	ni := tc.narinfoOf(t, u)
	narPath, file := "/"+ni.URL, tc.checkServedNar(t, ni, u.NAR).Body

	hs := httptest.NewUnstartedServer(tc.Handler)
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	client := hs.Client()

	for _, tt := range []struct {
		name, rng string
		status    int
		want      []byte
	}{
		{"full", "", http.StatusOK, file},
		{"resume", "bytes=10-", http.StatusPartialContent, file[10:]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, hs.URL+narPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.rng != "" {
				req.Header.Set("Range", tt.rng)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("test setup: got %s, want HTTP/2", resp.Proto)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("GET nar over HTTP/2: reading body: %v", err)
			}
			if resp.StatusCode != tt.status || !bytes.Equal(body, tt.want) {
				t.Fatalf("GET nar over HTTP/2: %d with %d bytes (%q...), want %d with the %d stored bytes",
					resp.StatusCode, len(body), truncateBytes(body, 40), tt.status, len(tt.want))
			}
		})
	}
}

func TestGetNarToRecorderWithoutReadFrom(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "recorder", "xz")
	u.store(t, tc)
	ni := tc.narinfoOf(t, u)
	narPath, file := "/"+ni.URL, tc.checkServedNar(t, ni, u.NAR).Body

	rec := httptest.NewRecorder()
	// Only the ResponseWriter methods, whatever the recorder grows: no ReadFrom to fall back on.
	w := struct{ http.ResponseWriter }{rec}
	if _, ok := any(w).(io.ReaderFrom); ok {
		t.Fatal("the wrapped recorder still offers ReadFrom")
	}
	tc.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, narPath, nil))
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("GET nar into a ResponseRecorder: %d with %d bytes (%q...), want 200 with the %d stored bytes",
			rec.Code, rec.Body.Len(), truncateBytes(rec.Body.Bytes(), 40), len(file))
	}
	if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(file)) {
		t.Errorf("Content-Length %q, want %d", cl, len(file))
	}
}

func truncateBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
