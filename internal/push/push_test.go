package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/server"
	"github.com/cached-dev/cached/internal/signing"
)

const testToken = "push-test-token"

// startCache runs a real cached stack (disk backend, Badger index, cache, server) on
// 127.0.0.1 and returns its URL.
func startCache(t *testing.T) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ix, err := index.Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	key, err := signing.Generate("push-test-1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(context.Background(), be, ix, key, log, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(server.New(server.Config{
		Cache: c, Log: log, UploadTokens: []string{testToken}, MaxUploadSize: 64 << 20, MaxMetaSize: 64 << 10,
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

// faultyTransport passes requests to the real server unless fault answers them first; it
// stands for overloaded proxies and dropped connections, which a real cached does not produce
// on demand. It records what reached the server.
type faultyTransport struct {
	mu     sync.Mutex
	next   http.RoundTripper
	fault  func(req *http.Request, attempt int) (*http.Response, error) // nil, nil: pass
	tries  map[string]int                                               // by "METHOD path"
	served []string                                                     // "METHOD path status", in order
}

func newFaulty(fault func(*http.Request, int) (*http.Response, error)) *faultyTransport {
	return &faultyTransport{next: http.DefaultTransport.(*http.Transport).Clone(), fault: fault, tries: map[string]int{}}
}

func (f *faultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	key := req.Method + " " + req.URL.Path
	f.mu.Lock()
	f.tries[key]++
	attempt := f.tries[key]
	f.mu.Unlock()
	if f.fault != nil {
		if resp, err := f.fault(req, attempt); resp != nil || err != nil {
			if req.Body != nil {
				io.Copy(io.Discard, req.Body)
				req.Body.Close()
			}
			if resp != nil {
				resp.Request = req
			}
			return resp, err
		}
	}
	resp, err := f.next.RoundTrip(req)
	if err == nil {
		f.mu.Lock()
		f.served = append(f.served, fmt.Sprintf("%s %d", key, resp.StatusCode))
		f.mu.Unlock()
	}
	return resp, err
}

func answer(status int, body string) *http.Response {
	return &http.Response{
		StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Retry-After": {"0"}}, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
	}
}

// closureOf makes a store of n paths under a temporary root, each referring to some earlier
// ones, and returns the root and their infos.
func closureOf(t *testing.T, n int) (string, []PathInfo) {
	t.Helper()
	root := t.TempDir()
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	var infos []PathInfo
	for i := range n {
		hash := []byte(strings.Repeat("0", 32))
		hash[30], hash[31] = alphabet[i/32%32], alphabet[i%32]
		hash[0] = alphabet[time.Now().UnixNano()%32]
		var refs []string
		for j := range i {
			if (i+j)%3 == 0 || j == i-1 {
				refs = append(refs, infos[j].Path)
			}
		}
		base := fmt.Sprintf("%s-p%02d", hash, i)
		info := writeStorePath(t, root, base, strings.Repeat(fmt.Sprintf("contents of %d\n", i), 100*(i+1)), refs...)
		infos = append(infos, info)
	}
	return root, infos
}

func narInfoPath(p PathInfo) string { return "/" + p.hashPart() + ".narinfo" }

// TestPushCommitsReferencesFirst: with many jobs, every narinfo reaches the server after the
// narinfos of its references were stored, and the server (which refuses a narinfo with missing
// references) accepts them all; a second push finds everything and sends no PUT.
func TestPushCommitsReferencesFirst(t *testing.T) {
	url := startCache(t)
	root, infos := closureOf(t, 30)
	for _, comp := range []string{"zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			if comp == "none" {
				url = startCache(t)
			}
			tr := newFaulty(nil)
			res, err := Push(context.Background(), Options{URL: url, Token: testToken, Jobs: 8, Compression: comp, StoreRoot: root, Transport: tr}, infos)
			if err != nil || len(res.Failed) > 0 || len(res.Pushed) != len(infos) {
				t.Fatalf("push: %v; failed %v; pushed %d of %d", err, res.Failed, len(res.Pushed), len(infos))
			}
			stored := map[string]bool{}
			for _, s := range tr.served {
				if !strings.HasPrefix(s, "PUT /") || strings.HasPrefix(s, "PUT /nar/") {
					continue
				}
				if !strings.HasSuffix(s, " 200") {
					t.Fatalf("server refused %s", s)
				}
				p := strings.Fields(s)[1]
				for _, info := range infos {
					if narInfoPath(info) != p {
						continue
					}
					for _, r := range info.References {
						if r != info.Path && !stored["/"+strings.SplitN(path.Base(r), "-", 2)[0]+".narinfo"] {
							t.Fatalf("%s sent before its reference %s", info.Path, r)
						}
					}
				}
				stored[p] = true
			}
			if len(stored) != len(infos) {
				t.Fatalf("%d narinfos stored, want %d", len(stored), len(infos))
			}
			tr2 := newFaulty(nil)
			res, err = Push(context.Background(), Options{URL: url, Token: testToken, Compression: comp, StoreRoot: root, Transport: tr2}, infos)
			if err != nil || res.Present != len(infos) || len(res.Pushed) != 0 {
				t.Fatalf("second push: %v, %d present, %d pushed", err, res.Present, len(res.Pushed))
			}
			for _, s := range tr2.served {
				if strings.HasPrefix(s, "PUT") {
					t.Fatalf("second push sent %s", s)
				}
			}
		})
	}
}

// TestPushRetriesTransientFailures: a 429 on the lookup, a 503 on every NAR's first upload and a
// dropped connection on every narinfo's first upload are retried; everything gets in.
func TestPushRetriesTransientFailures(t *testing.T) {
	url := startCache(t)
	root, infos := closureOf(t, 6)
	tr := newFaulty(func(req *http.Request, attempt int) (*http.Response, error) {
		if attempt > 1 {
			return nil, nil
		}
		switch {
		case req.Method == http.MethodPost:
			return answer(http.StatusTooManyRequests, "slow down"), nil
		case req.Method == http.MethodPut && strings.HasPrefix(req.URL.Path, "/nar/"):
			return answer(http.StatusServiceUnavailable, "storage temporarily unavailable"), nil
		case req.Method == http.MethodPut:
			return nil, syscall.ECONNRESET
		}
		return nil, nil
	})
	res, err := Push(context.Background(), Options{URL: url, Token: testToken, Jobs: 3, StoreRoot: root, Transport: tr, RetryDelay: time.Millisecond}, infos)
	if err != nil || len(res.Failed) > 0 || len(res.Pushed) != len(infos) {
		t.Fatalf("push: %v; failed %v; pushed %d of %d", err, res.Failed, len(res.Pushed), len(infos))
	}
	for _, info := range infos {
		if n := tr.tries["PUT "+narInfoPath(info)]; n != 2 {
			t.Errorf("narinfo of %s sent %d times, want 2", info.Path, n)
		}
	}
}

// TestPushGivesUp: a NAR that keeps failing with 503 fails its path after the attempts, with
// the server's reason, and the paths depending on it; their narinfos are never sent, and the
// rest of the closure is pushed.
func TestPushGivesUp(t *testing.T) {
	url := startCache(t)
	root, infos := closureOf(t, 6)
	bad := infos[3] // infos[4] and [5] depend on it (each path refers to the one before)
	badNar := ""
	tr := newFaulty(func(req *http.Request, attempt int) (*http.Response, error) {
		if req.Method == http.MethodPut && strings.HasPrefix(req.URL.Path, "/nar/") && req.ContentLength == int64(bad.NarSize) {
			badNar = req.URL.Path
			return answer(http.StatusServiceUnavailable, "storage temporarily unavailable; nothing was stored"), nil
		}
		return nil, nil
	})
	res, err := Push(context.Background(), Options{URL: url, Token: testToken, Compression: "none", StoreRoot: root, Transport: tr, Attempts: 3, RetryDelay: time.Millisecond}, infos)
	if err != nil {
		t.Fatal(err)
	}
	if tr.tries["PUT "+badNar] != 3 {
		t.Errorf("bad NAR tried %d times, want 3", tr.tries["PUT "+badNar])
	}
	if len(res.Failed) != 3 || len(res.Pushed) != 3 {
		t.Fatalf("failed %v, pushed %v; want 3 and 3", res.Failed, res.Pushed)
	}
	for _, f := range res.Failed {
		want := "depends on " + bad.Path
		if f.Path == bad.Path {
			want = "503 Service Unavailable: storage temporarily unavailable; nothing was stored (gave up after 3 attempts)"
		}
		if !strings.Contains(f.Err.Error(), want) {
			t.Errorf("%s: %v, want %q", f.Path, f.Err, want)
		}
	}
	for _, info := range infos[3:] {
		if tr.tries["PUT "+narInfoPath(info)] != 0 {
			t.Errorf("narinfo of %s was sent", info.Path)
		}
		resp, err := http.Head(url + narInfoPath(info))
		if err != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD narinfo of %s: %v %v, want 404", info.Path, resp.StatusCode, err)
		}
	}
}

// TestPushStopsOnRefusedToken: a 401 ends the whole push at once with ErrAuth and the
// server's reason.
func TestPushStopsOnRefusedToken(t *testing.T) {
	url := startCache(t)
	root, infos := closureOf(t, 20)
	tr := newFaulty(nil)
	_, err := Push(context.Background(), Options{URL: url, Token: "wrong", Jobs: 2, StoreRoot: root, Transport: tr}, infos)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "401 Unauthorized: token not accepted") {
		t.Fatalf("push with a wrong token: %v, want ErrAuth with the server's reason", err)
	}
	puts := 0
	for _, s := range tr.served {
		if strings.HasPrefix(s, "PUT") {
			puts++
		}
	}
	if puts > 4 {
		t.Fatalf("%d PUTs after the first 401, want the push stopped", puts)
	}
}

// countServed counts the requests that reached the server whose "METHOD path" starts with prefix.
func (f *faultyTransport) countServed(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.served {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// TestPushLookupBatched: a push asks a cached server what it has in one POST /_cached/exists
// per batch of paths (1,000; 20 here) and no HEAD; with HeadLookups, with a HEAD per path. Both
// find the same.
func TestPushLookupBatched(t *testing.T) {
	defer func(n int) { existsBatch = n }(existsBatch)
	existsBatch = 20
	url := startCache(t)
	root, infos := closureOf(t, 50)
	half := infos[:30]
	if _, err := Push(context.Background(), Options{URL: url, Token: testToken, Compression: "none", StoreRoot: root}, half); err != nil {
		t.Fatal(err)
	}
	for _, heads := range []bool{false, true} {
		tr := newFaulty(nil)
		res, err := Push(context.Background(), Options{URL: url, Token: testToken, Compression: "none", StoreRoot: root, Transport: tr, HeadLookups: heads}, half)
		if err != nil || res.Present != len(half) || len(res.Pushed) != 0 {
			t.Fatalf("push again (head lookups %v): %v, %d present, %d pushed", heads, err, res.Present, len(res.Pushed))
		}
		posts, hs := tr.countServed("POST /_cached/exists 200"), tr.countServed("HEAD ")
		if heads && (posts != 0 || hs != len(half)) || !heads && (posts != 2 || hs != 0) {
			t.Errorf("head lookups %v: %d POSTs, %d HEADs", heads, posts, hs)
		}
	}
	// 50 paths, 30 present: three POSTs.
	tr := newFaulty(nil)
	res, err := Push(context.Background(), Options{URL: url, Token: testToken, Compression: "none", StoreRoot: root, Transport: tr}, infos)
	if err != nil || res.Present != 30 || len(res.Pushed) != 20 || len(res.Failed) != 0 {
		t.Fatalf("push of all: %v, %d present, %d pushed, %d failed", err, res.Present, len(res.Pushed), len(res.Failed))
	}
	if posts := tr.countServed("POST /_cached/exists 200"); posts != 3 {
		t.Errorf("%d POSTs for 50 paths, want 3", posts)
	}
}

// TestPushLookupFallsBack: a server that refuses POST /_cached/exists (404 or 405: a binary
// cache without it; 403: an older cached, which keeps /_cached/ for admin tokens) is asked
// with HEADs, and the push completes. The refusals are injected: the real server has the
// endpoint.
func TestPushLookupFallsBack(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusForbidden} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			url := startCache(t)
			root, infos := closureOf(t, 5)
			tr := newFaulty(func(req *http.Request, attempt int) (*http.Response, error) {
				if req.Method == http.MethodPost {
					return answer(status, "no"), nil
				}
				return nil, nil
			})
			res, err := Push(context.Background(), Options{URL: url, Token: testToken, StoreRoot: root, Transport: tr}, infos)
			if err != nil || len(res.Pushed) != len(infos) {
				t.Fatalf("push: %v, %d pushed of %d", err, len(res.Pushed), len(infos))
			}
			if hs := tr.countServed("HEAD /"); hs < len(infos) {
				t.Errorf("%d HEAD lookups, want one per path (%d)", hs, len(infos))
			}
		})
	}
}
