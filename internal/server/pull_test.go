package server_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/server"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/cached-dev/cached/internal/upstream"
)

// fileUpstream is an upstream binary cache: a static file server over a directory laid out as
// nix copy --to file:// lays it out. It counts the requests it gets; fault, when set, may answer
// a request instead (a stalled or dying upstream, which a file server does not do by itself).
type fileUpstream struct {
	dir      string
	srv      *httptest.Server
	key      signing.SecretKey
	requests sync.Map // path -> *atomic.Int64
	fault    atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func newFileUpstream(t *testing.T) *fileUpstream {
	t.Helper()
	key, err := signing.Generate("upstream.test-1")
	if err != nil {
		t.Fatal(err)
	}
	u := &fileUpstream{dir: t.TempDir(), key: key}
	os.WriteFile(filepath.Join(u.dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	files := http.FileServer(http.Dir(u.dir))
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := u.requests.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if f := u.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// count is how many requests path got.
func (u *fileUpstream) count(path string) int64 {
	n, ok := u.requests.Load(path)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func (u *fileUpstream) total() int64 {
	var sum int64
	u.requests.Range(func(_, v any) bool { sum += v.(*atomic.Int64).Load(); return true })
	return sum
}

func (u *fileUpstream) write(t *testing.T, name string, data []byte) {
	t.Helper()
	p := filepath.Join(u.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// publish puts up's NAR and its narinfo, signed by the upstream's key, in the upstream.
func (u *fileUpstream) publish(t *testing.T, up *upload) {
	t.Helper()
	ni := up.Info
	ni.Sigs = []string{u.key.Sign(ni.Fingerprint())}
	u.write(t, up.Info.URL, up.File)
	u.write(t, up.Hash+".narinfo", ni.Bytes())
}

func (u *fileUpstream) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	u.fault.Store(&f)
}

// newPullCache starts a cache that pulls from the given upstream URLs, trusting keys.
func newPullCache(t *testing.T, keys []signing.PublicKey, edit func(*upstream.Config), urls ...string) *testCache {
	t.Helper()
	return newTestCacheConfig(t, func(cfg *server.Config) {
		pc := upstream.Config{
			URLs: urls, Keys: keys, SpoolDir: t.TempDir(), Log: cfg.Log,
			Timeouts: upstream.Timeouts{Connect: time.Second, FirstByte: 2 * time.Second, Idle: 2 * time.Second},
		}
		if edit != nil {
			edit(&pc)
		}
		p, err := upstream.New(cfg.Cache, pc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		cfg.Puller = p
	})
}

func TestPullThroughServesVerifiesAndStores(t *testing.T) {
	up := newFileUpstream(t)
	u := newUpload(t, "pulled", "xz")
	up.publish(t, u)
	tc := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, up.srv.URL)

	mustStatus(t, "HEAD narinfo", tc.head(t, u.NarInfoPath()), http.StatusOK)
	ni := tc.narinfoOf(t, u) // signed by the cache
	if !hasSig(ni, up.key.Public()) {
		t.Fatalf("served narinfo lost the upstream's signature: %v", ni.Sigs)
	}
	if ni.URL != u.Info.URL {
		t.Fatalf("served URL %s, want the upstream's %s (named by its file hash)", ni.URL, u.Info.URL)
	}
	checkPulledNar(t, tc, ni, u)
	if n := up.count("/" + u.Info.URL); n != 1 {
		t.Fatalf("upstream got %d GETs of the NAR, want 1", n)
	}
	// Stored: a request with the write token (never pulled for) sees the committed narinfo, and
	// the NAR is served from the store once the upstream is gone.
	up.srv.Close()
	r := committedNarInfo(t, tc, u)
	stored := tc.parseServed(t, r.Body)
	if !hasSig(stored, up.key.Public()) {
		t.Fatalf("stored narinfo lost the upstream's signature: %v", stored.Sigs)
	}
	tc.checkServedNar(t, stored, u.NAR)
	if !contains(tc.files(t), u.Info.URL) || !contains(tc.files(t), u.Hash+".narinfo") {
		t.Fatalf("backend holds %v, want the NAR and narinfo", tc.files(t))
	}
	metrics := string(tc.get(t, "/metrics").Body)
	for _, want := range []string{
		`cached_upstream_requests_total{kind="nar",result="ok",upstream="` + up.srv.URL + `/"} 1`,
		`cached_upstream_requests_total{kind="narinfo",result="ok",upstream="` + up.srv.URL + `/"} 1`,
		`cached_upstream_pulled_bytes_total{upstream="` + up.srv.URL + `/"} ` + itoa(len(u.File)),
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// committedNarInfo waits for the narinfo of a pulled path to be committed (a client has its NAR
// as soon as it verified, a moment before the commit), and returns it as a request with the write
// token, which is never pulled for, gets it.
func committedNarInfo(t *testing.T, tc *testCache, u *upload) *response {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := tc.get(t, u.NarInfoPath(), withBasicAuth("nix", testToken))
		if r.Status == http.StatusOK || time.Now().After(deadline) {
			mustStatus(t, "GET narinfo (write token) after the pull", r, http.StatusOK)
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkPulledNar GETs the NAR of a pulled narinfo, which the cache streams while it pulls it, and
// checks it is the upstream's file, whole.
func checkPulledNar(t *testing.T, tc *testCache, ni *narinfo.NarInfo, u *upload) {
	t.Helper()
	r := tc.get(t, "/"+ni.URL)
	mustStatus(t, "GET pulled "+ni.URL, r, http.StatusOK)
	if !bytes.Equal(r.Body, u.File) {
		t.Fatalf("GET pulled %s: %d bytes that are not the upstream's %d", ni.URL, len(r.Body), len(u.File))
	}
	if cl := r.Header.Get("Content-Length"); cl != itoa(len(u.File)) {
		t.Errorf("GET pulled %s: Content-Length %q, want %d", ni.URL, cl, len(u.File))
	}
	if ce, ok := r.Header["Content-Encoding"]; ok {
		t.Errorf("GET pulled %s: Content-Encoding %q", ni.URL, ce)
	}
}

func hasSig(ni *narinfo.NarInfo, k signing.PublicKey) bool {
	for _, s := range ni.Sigs {
		if k.Verify(ni.Fingerprint(), s) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func itoa(n int) string { return strconv.Itoa(n) }

// The narinfos in shared/testdata were signed by cache.nixos.org: served by an upstream, they
// verify with its real key and are served through; with one byte changed, they are refused.
func TestPullThroughRealCacheNixosOrgSignatures(t *testing.T) {
	const nixosKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	pk, err := signing.ParsePublicKey(nixosKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "..", "..", "shared", "testdata", "cache.nixos.org")
	names, _ := filepath.Glob(filepath.Join(dir, "*.narinfo"))
	if len(names) == 0 {
		t.Fatalf("no narinfos in %s", dir)
	}
	up := newFileUpstream(t)
	tc := newPullCache(t, []signing.PublicKey{pk}, nil, up.srv.URL)
	for _, name := range names {
		orig, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		hash := strings.TrimSuffix(filepath.Base(name), ".narinfo")
		up.write(t, hash+".narinfo", orig)
		r := tc.get(t, "/"+hash+".narinfo")
		mustStatus(t, "GET "+hash+".narinfo", r, http.StatusOK)
		ni := tc.parseServed(t, r.Body)
		if !hasSig(ni, pk) {
			t.Fatalf("%s: served without a cache.nixos.org signature that verifies:\n%s", hash, r.Body)
		}
		if !bytes.Contains(r.Body, []byte(sigLine(orig))) {
			t.Fatalf("%s: the original Sig line is not served:\n%s", hash, r.Body)
		}
	}
	// One byte changed in what the signature covers (NarSize), in a fresh cache.
	tc2 := newPullCache(t, []signing.PublicKey{pk}, nil, up.srv.URL)
	for _, name := range names {
		orig, _ := os.ReadFile(name)
		hash := strings.TrimSuffix(filepath.Base(name), ".narinfo")
		i := bytes.Index(orig, []byte("NarSize: ")) + len("NarSize: ")
		bad := bytes.Clone(orig)
		bad[i] = "12"[map[bool]int{true: 1}[bad[i] == '1']]
		up.write(t, hash+".narinfo", bad)
		mustStatus(t, "GET tampered "+hash+".narinfo", tc2.get(t, "/"+hash+".narinfo"), http.StatusNotFound)
	}
	metrics := string(tc2.get(t, "/metrics").Body)
	if want := `cached_upstream_refused_total{reason="bad_signature",upstream="` + up.srv.URL + `/"} ` + itoa(len(names)); !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if files := tc2.files(t); len(files) != 1 { // nix-cache-info
		t.Errorf("a refused narinfo left files behind: %v", files)
	}
}

func sigLine(text []byte) string {
	for _, l := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(l, "Sig: ") {
			return l
		}
	}
	return "no Sig line"
}

// An upstream narinfo signed by an untrusted key, unsigned, or malformed is never served.
func TestPullThroughRefusesUntrustedNarInfos(t *testing.T) {
	up := newFileUpstream(t)
	other, _ := signing.Generate("other-1")
	tc := newPullCache(t, []signing.PublicKey{other.Public()}, nil, up.srv.URL)
	signed := newUpload(t, "signed-by-untrusted", "xz")
	up.publish(t, signed)
	unsigned := newUpload(t, "unsigned", "xz")
	up.write(t, unsigned.Hash+".narinfo", unsigned.Text())
	malformed := newUpload(t, "malformed", "xz")
	up.write(t, malformed.Hash+".narinfo", []byte("StorePath: /nix/store/"+malformed.Hash+"-malformed\nNarSize: x\n"))
	// Well signed (the URL is not covered by the signature), but pointing elsewhere.
	elsewhere := newUpload(t, "elsewhere", "xz")
	elsewhere.Info.URL = "http://127.0.0.1:1/" + elsewhere.Info.URL
	trusted, _ := signing.Generate("trusted-1")
	tc2 := newPullCache(t, []signing.PublicKey{trusted.Public()}, nil, up.srv.URL)
	ni := elsewhere.Info
	ni.Sigs = []string{trusted.Sign(ni.Fingerprint())}
	up.write(t, elsewhere.Hash+".narinfo", ni.Bytes())
	mustStatus(t, "GET narinfo whose URL names another host", tc2.get(t, elsewhere.NarInfoPath()), http.StatusNotFound)
	for _, u := range []*upload{signed, unsigned, malformed} {
		mustStatus(t, "GET "+u.NarInfoPath(), tc.get(t, u.NarInfoPath()), http.StatusNotFound)
		mustStatus(t, "GET "+u.NarPath, tc.get(t, u.NarPath), http.StatusNotFound)
	}
	if n := up.count(signed.NarPath); n != 0 {
		t.Fatalf("the NAR of a refused narinfo was fetched %d times", n)
	}
	if files := tc.files(t); len(files) != 1 {
		t.Errorf("refused narinfos left files behind: %v", files)
	}
	metrics := string(tc.get(t, "/metrics").Body)
	for _, want := range []string{`reason="bad_signature"`, `reason="invalid"`} {
		if !strings.Contains(metrics, "cached_upstream_refused_total{"+want) {
			t.Errorf("/metrics does not count %s", want)
		}
	}
}

// A NAR whose bytes are not what its (well signed) narinfo says is refused, not stored, and its
// client gets a broken answer, never a complete 200.
func TestPullThroughTamperedNarRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func([]byte) []byte
	}{
		{"flipped byte", func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 1; return b }},
		{"short", func(b []byte) []byte { return b[:len(b)-10] }},
		{"longer", func(b []byte) []byte { return append(bytes.Clone(b), 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newFileUpstream(t)
			u := newUpload(t, "tampered", "xz")
			up.publish(t, u)
			up.write(t, u.Info.URL, tc.tamper(u.File))
			c := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, up.srv.URL)
			mustStatus(t, "GET narinfo", c.get(t, u.NarInfoPath()), http.StatusOK)
			r, err := c.try(http.MethodGet, u.NarPath, nil)
			if err == nil && r.Status == http.StatusOK {
				t.Fatalf("GET of a tampered NAR: a complete 200 of %d bytes (%v)", len(r.Body), r.Header)
			}
			for _, f := range c.files(t) {
				if strings.HasPrefix(f, "nar/") || strings.HasSuffix(f, ".narinfo") {
					t.Fatalf("tampered NAR left %s in the backend", f)
				}
			}
			mustStatus(t, "narinfo (write token)", c.get(t, u.NarInfoPath(), withBasicAuth("nix", testToken)), http.StatusNotFound)
			if m := string(c.get(t, "/metrics").Body); !strings.Contains(m, `cached_upstream_refused_total{reason="bad_nar"`) {
				t.Errorf("/metrics does not count the bad NAR")
			}
		})
	}
}

// Many clients asking at once for one NAR not stored yet cause one upstream GET, and all get
// the same, verified bytes; a client that goes away does not stop the download.
func TestPullThroughOneFetchForConcurrentClients(t *testing.T) {
	up := newFileUpstream(t)
	u := newUpload(t, "shared", "xz")
	up.publish(t, u)
	// The upstream sends the NAR slowly, so that every client asks while it is in flight.
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != u.NarPath {
			return false
		}
		w.Header().Set("Content-Length", itoa(len(u.File)))
		w.WriteHeader(http.StatusOK)
		w.Write(u.File[:len(u.File)/2])
		w.(http.Flusher).Flush()
		<-release
		w.Write(u.File[len(u.File)/2:])
		return true
	})
	c := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, up.srv.URL)
	ni := c.narinfoOf(t, u)
	const clients = 32
	var wg sync.WaitGroup
	bodies := make([][]byte, clients)
	errs := make([]error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.try(http.MethodGet, "/"+ni.URL, nil)
			if err == nil && r.Status != http.StatusOK {
				err = &statusErr{r.Status}
			}
			if err == nil {
				bodies[i] = r.Body
			}
			errs[i] = err
		}()
	}
	// One more client hangs up mid-stream.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/"+ni.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("client hanging up: %v", err)
	}
	cancel()
	resp.Body.Close()
	time.Sleep(200 * time.Millisecond)
	releaseAll()
	wg.Wait()
	for i := range clients {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		if !bytes.Equal(bodies[i], u.File) {
			t.Fatalf("client %d got %d bytes that are not the NAR file", i, len(bodies[i]))
		}
	}
	if n := up.count(u.NarPath); n != 1 {
		t.Fatalf("upstream got %d GETs of the NAR, want 1", n)
	}
	c.checkServedNar(t, c.parseServed(t, committedNarInfo(t, c, u).Body), u.NAR)
}

type statusErr struct{ status int }

func (e *statusErr) Error() string { return "status " + itoa(e.status) }

// Requests with a write token (nix copy --to asks what the cache has before uploading) never go
// upstream: the path is uploaded as usual.
func TestPullThroughNeverForWriters(t *testing.T) {
	up := newFileUpstream(t)
	u := newUpload(t, "pushed", "xz")
	up.publish(t, u)
	c := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, up.srv.URL)
	mustStatus(t, "HEAD narinfo with the write token", c.do(t, http.MethodHead, u.NarInfoPath(), nil, withBasicAuth("nix", testToken)), http.StatusNotFound)
	mustStatus(t, "GET narinfo with the write token", c.get(t, u.NarInfoPath(), withBasicAuth("nix", testToken)), http.StatusNotFound)
	mustStatus(t, "HEAD NAR with the write token", c.do(t, http.MethodHead, u.NarPath, nil, withBasicAuth("nix", testToken)), http.StatusNotFound)
	u.store(t, c)
	if n := up.total(); n != 0 {
		t.Fatalf("upstream asked %d times", n)
	}
	ni := c.narinfoOf(t, u)
	if hasSig(ni, up.key.Public()) {
		t.Fatalf("uploaded narinfo carries the upstream's signature: it was pulled")
	}
}

// A 404 from every upstream is remembered for the negative TTL.
func TestPullThroughNegativeCache(t *testing.T) {
	up := newFileUpstream(t)
	c := newPullCache(t, []signing.PublicKey{up.key.Public()}, func(pc *upstream.Config) { pc.NegativeTTL = time.Hour }, up.srv.URL)
	u := newUpload(t, "absent", "xz")
	for range 5 {
		mustStatus(t, "GET absent narinfo", c.get(t, u.NarInfoPath()), http.StatusNotFound)
	}
	if n := up.count(u.NarInfoPath()); n != 1 {
		t.Fatalf("upstream asked %d times for one missing narinfo, want 1", n)
	}
}

// Upstreams are tried in order: one that lacks a path, then one that has it.
func TestPullThroughTriesUpstreamsInOrder(t *testing.T) {
	first, second := newFileUpstream(t), newFileUpstream(t)
	u := newUpload(t, "in-second", "zstd")
	second.publish(t, u)
	c := newPullCache(t, []signing.PublicKey{first.key.Public(), second.key.Public()}, nil, first.srv.URL, second.srv.URL)
	ni := c.narinfoOf(t, u)
	checkPulledNar(t, c, ni, u)
	if first.count(u.NarInfoPath()) != 1 || second.count(u.NarInfoPath()) != 1 {
		t.Fatalf("narinfo asked %d times of the first, %d of the second; want 1 each", first.count(u.NarInfoPath()), second.count(u.NarInfoPath()))
	}
}

// A --private cache pulls for readers with a token, never for anonymous clients.
func TestPullThroughPrivate(t *testing.T) {
	up := newFileUpstream(t)
	u := newUpload(t, "private", "xz")
	up.publish(t, u)
	c := newTestCacheConfig(t, func(cfg *server.Config) {
		cfg.Private = true
		cfg.Tokens = auth.NewStore(nil)
		cfg.Tokens.AddFixed("reader", auth.ScopeRead)
		p, err := upstream.New(cfg.Cache, upstream.Config{URLs: []string{up.srv.URL}, Keys: []signing.PublicKey{up.key.Public()}, SpoolDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		cfg.Puller = p
	})
	mustStatus(t, "anonymous GET", c.get(t, u.NarInfoPath()), http.StatusUnauthorized)
	mustStatus(t, "anonymous GET NAR", c.get(t, u.NarPath), http.StatusUnauthorized)
	if n := up.total(); n != 0 {
		t.Fatalf("anonymous requests made %d upstream requests", n)
	}
	r := c.get(t, u.NarInfoPath(), withBasicAuth("nix", "reader"))
	mustStatus(t, "reader GET", r, http.StatusOK)
	nr := c.get(t, u.NarPath, withBasicAuth("nix", "reader"))
	mustStatus(t, "reader GET NAR", nr, http.StatusOK)
	if !bytes.Equal(nr.Body, u.File) {
		t.Fatalf("reader got %d bytes that are not the NAR", len(nr.Body))
	}
}

// A sick upstream costs bounded time: one that accepts and never answers fails a miss after the
// first-byte timeout, and once its breaker is open, misses cost no upstream time at all; one
// that dies mid-body cuts the client's connection, never a short 200.
func TestPullThroughSickUpstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() { // accepts, reads, never answers
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go io.Copy(io.Discard, conn)
		}
	}()
	const firstByte = 300 * time.Millisecond
	c := newPullCache(t, []signing.PublicKey{newFileUpstream(t).key.Public()}, func(pc *upstream.Config) {
		pc.Timeouts.FirstByte = firstByte
		pc.Breaker = upstream.BreakerConfig{Failures: 2, Cooldown: time.Hour}
	}, "http://"+ln.Addr().String())
	for i := range 2 {
		start := time.Now()
		mustStatus(t, "miss on a hanging upstream", c.get(t, "/"+storeHash(itoa(i))+".narinfo"), http.StatusNotFound)
		if d := time.Since(start); d > 10*firstByte {
			t.Fatalf("miss %d took %s with a first-byte timeout of %s", i, d, firstByte)
		}
	}
	before := accepted.Load()
	for i := range 20 {
		mustStatus(t, "miss with the breaker open", c.get(t, "/"+storeHash("open"+itoa(i))+".narinfo"), http.StatusNotFound)
	}
	if accepted.Load() != before {
		t.Fatalf("the upstream got %d more connections with its breaker open", accepted.Load()-before)
	}
	if m := string(c.get(t, "/metrics").Body); !strings.Contains(m, `cached_upstream_breaker_state{upstream="http://`+ln.Addr().String()+`/"} 1`) {
		t.Errorf("/metrics does not show the breaker open")
	}

	// Dying, or stalling, mid-body.
	for _, tc := range []struct {
		name string
		end  func()
	}{
		{"dies", func() { panic(http.ErrAbortHandler) }},
		{"stalls", func() { time.Sleep(3 * time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newFileUpstream(t)
			u := newUpload(t, tc.name, "xz")
			up.publish(t, u)
			up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != u.NarPath {
					return false
				}
				w.Header().Set("Content-Length", itoa(len(u.File)))
				w.WriteHeader(http.StatusOK)
				w.Write(u.File[:len(u.File)/2])
				w.(http.Flusher).Flush()
				tc.end()
				return true
			})
			const idle = 300 * time.Millisecond
			c2 := newPullCache(t, []signing.PublicKey{up.key.Public()}, func(pc *upstream.Config) { pc.Timeouts.Idle = idle }, up.srv.URL)
			mustStatus(t, "GET narinfo", c2.get(t, u.NarInfoPath()), http.StatusOK)
			start := time.Now()
			r, err := c2.try(http.MethodGet, u.NarPath, nil)
			if err == nil && r.Status == http.StatusOK {
				t.Fatalf("a NAR cut mid-body upstream: a complete 200 of %d bytes", len(r.Body))
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("a NAR cut mid-body took %s to fail (idle timeout %s)", d, idle)
			}
			for _, f := range c2.files(t) {
				if strings.HasPrefix(f, "nar/") {
					t.Fatalf("a NAR cut mid-body left %s in the backend", f)
				}
			}
		})
	}
}

// A NAR download the upstream cuts once is resumed from where it stopped (Range, If-Range), and
// the client gets the whole, verified NAR in one answer.
func TestPullThroughResumesBrokenDownload(t *testing.T) {
	up := newFileUpstream(t)
	u := newUploadNAR(t, "resumed", "none", buildNAR(t, "resumed"))
	up.publish(t, u)
	var cut atomic.Bool
	var ranges []string
	var mu sync.Mutex
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != u.NarPath {
			return false
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		if cut.Swap(true) {
			return false // the file server, which answers Range
		}
		w.Header().Set("Content-Length", itoa(len(u.File)))
		fi, err := os.Stat(filepath.Join(up.dir, u.Info.URL))
		if err != nil {
			panic(err)
		}
		w.Header().Set("Last-Modified", fi.ModTime().UTC().Format(http.TimeFormat)) // as the file server says
		w.WriteHeader(http.StatusOK)
		w.Write(u.File[:len(u.File)/3])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	c := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, up.srv.URL)
	ni := c.narinfoOf(t, u)
	checkPulledNar(t, c, ni, u)
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes="+itoa(len(u.File)/3)+"-" {
		t.Fatalf("upstream NAR requests had Range %q, want none then bytes=%d-", ranges, len(u.File)/3)
	}
	c.checkServedNar(t, c.parseServed(t, committedNarInfo(t, c, u).Body), u.NAR)
	if m := string(c.get(t, "/metrics").Body); !strings.Contains(m, `cached_upstream_requests_total{kind="nar",result="resumed"`) {
		t.Errorf("/metrics does not count the resumed download")
	}
}

// The fast path answers a pulled narinfo itself, and hands a request with credentials to the
// router, which never pulls for a write token.
func TestPullThroughFastPath(t *testing.T) {
	up := newFileUpstream(t)
	pushed, pulled := newUpload(t, "fast-pushed", "xz"), newUpload(t, "fast-pulled", "xz")
	up.publish(t, pushed)
	up.publish(t, pulled)
	c := newPullCache(t, []signing.PublicKey{up.key.Public()}, nil, up.srv.URL)
	addr, fs := startFast(t, c, time.Minute)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	get := func(path string, token bool) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if token {
			req.SetBasicAuth("nix", testToken)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	before := fs.Answered()
	if r := get(pulled.NarInfoPath(), false); r.StatusCode != http.StatusOK {
		t.Fatalf("anonymous GET of a narinfo the upstream has: %d", r.StatusCode)
	}
	if fs.Answered() != before+1 {
		t.Fatalf("the fast path did not answer the pulled narinfo itself")
	}
	if r := get(pushed.NarInfoPath(), true); r.StatusCode != http.StatusNotFound {
		t.Fatalf("GET with the write token of a narinfo the upstream has: %d, want 404", r.StatusCode)
	}
	if n := up.count(pushed.NarInfoPath()); n != 0 {
		t.Fatalf("a request with the write token asked the upstream %d times", n)
	}
}
