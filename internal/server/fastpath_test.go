package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/logging"
	"github.com/cached-dev/cached/internal/server"
)

// startFast serves tc's handler through the narinfo fast path on a listener of its own, beside
// tc's plain net/http one, so that the two can be sent the same bytes.
func startFast(tb testing.TB, tc *testCache, headerTimeout time.Duration) (string, *server.FastServer) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hs := &http.Server{Handler: tc.Handler, ReadHeaderTimeout: headerTimeout, IdleTimeout: time.Minute}
	fs := server.NewFastServer(tc.Handler, hs)
	done := make(chan error, 1)
	go func() { done <- fs.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fs.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), fs
}

// exchange writes raw to addr on one connection and reads n answers (n < 0: everything until the
// server closes). It returns the answers, normalised: Date and generated X-Request-Id values
// differ between any two answers.
func exchange(tb testing.TB, addr, raw string, n int, head bool) []string {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []string
	for i := 0; n < 0 || i < n; i++ {
		req := &http.Request{Method: http.MethodGet}
		if head {
			req.Method = http.MethodHead
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			if n < 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
				break
			}
			tb.Fatalf("answer %d to %q: %v", i+1, raw, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Header.Del("Date")
		if id := resp.Header.Get("X-Request-Id"); len(id) == 16 && !strings.Contains(raw, id) {
			resp.Header.Set("X-Request-Id", "generated")
		}
		var b bytes.Buffer
		b.WriteString(resp.Status + "\n")
		resp.Header.Write(&b)
		b.WriteString("\n")
		b.Write(body)
		out = append(out, b.String())
	}
	return out
}

// TestFastPathAnswersAsTheRouter sends the same requests to the router through net/http and to
// the fast path, and wants the same answers, byte for byte but for Date and generated request IDs.
func TestFastPathAnswersAsTheRouter(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "fast", "xz")
	u.store(t, tc)
	fast, fs := startFast(t, tc, 30*time.Second)
	etag := tc.get(t, u.NarInfoPath()).Header.Get("Etag")
	if etag == "" {
		t.Fatal("narinfo has no ETag")
	}
	miss := "/" + storeHash("absent") + ".narinfo"
	host := "Host: cache\r\n"
	// The NAR as stored (zstd; the xz upload's name is recompressed by the router on the fly).
	nar := "/" + tc.narinfoOf(t, u).URL
	if nar == u.NarPath {
		t.Fatalf("the xz upload was stored as uploaded (%s): the uploaded-name case tests nothing", nar)
	}
	absentNar := "/nar/" + strings.Repeat("0", 52) + ".nar.zst"
	// The NAR URLs of nix-serve and harmonia (storenar.go).
	narHash := nix32(u.Info.NarHash.Digest)
	storeNar := "/nar/" + u.Hash + "-" + narHash + ".nar"
	// The first fastCases are the fast path's to answer; the rest net/http's.
	const fastCases = 15
	cases := []struct {
		name, raw string
		head      bool
	}{
		{"hit", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"hit HEAD", "HEAD " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "\r\n", true},
		{"miss", "GET " + miss + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"miss HEAD", "HEAD " + miss + " HTTP/1.1\r\n" + host + "\r\n", true},
		{"not modified", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "If-None-Match: " + etag + "\r\n\r\n", false},
		{"other etag", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "If-None-Match: \"x\"\r\n\r\n", false},
		{"request id kept", "GET " + miss + " HTTP/1.1\r\n" + host + "X-Request-Id: abc-123\r\n\r\n", false},
		{"request id replaced", "GET " + miss + " HTTP/1.1\r\n" + host + "X-Request-Id: a b\r\n\r\n", false},
		{"two request ids", "GET " + miss + " HTTP/1.1\r\n" + host + "X-Request-Id: first\r\nX-Request-Id: second\r\n\r\n", false},
		{"close", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n", false},
		{"nix's headers", "GET " + u.NarInfoPath() + " HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: curl/7.88.1 Nix/2.8.0\r\nAccept: */*\r\nAccept-Encoding: deflate, gzip, br, zstd\r\n\r\n", false},
		{"stored nar", "GET " + nar + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"stored nar HEAD", "HEAD " + nar + " HTTP/1.1\r\n" + host + "\r\n", true},
		{"stored nar, close", "GET " + nar + " HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n", false},
		{"stored nar, nix's headers", "GET " + nar + " HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: curl/7.88.1 Nix/2.8.0\r\nAccept: */*\r\nAccept-Encoding: deflate, gzip, br, zstd\r\n\r\n", false},
		// Everything below is for net/http to answer, through the hand-off.
		{"uploaded nar name", "GET " + u.NarPath + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"absent nar", "GET " + absentNar + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"absent nar HEAD", "HEAD " + absentNar + " HTTP/1.1\r\n" + host + "\r\n", true},
		{"nar range", "GET " + nar + " HTTP/1.1\r\n" + host + "Range: bytes=2-9\r\n\r\n", false},
		{"nar not modified", "GET " + nar + " HTTP/1.1\r\n" + host + "If-None-Match: \"" + nar[5:57] + "\"\r\n\r\n", false},
		{"nar if-modified-since", "GET " + nar + " HTTP/1.1\r\n" + host + "If-Modified-Since: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n", false},
		{"nar bad name", "GET /nar/" + strings.Repeat("e", 52) + ".nar.zst HTTP/1.1\r\n" + host + "\r\n", false},
		{"nar unknown compression", "GET " + strings.TrimSuffix(nar, ".zst") + ".gz HTTP/1.1\r\n" + host + "\r\n", false},
		{"nar escaped", "GET /nar/%30" + nar[6:] + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"nar query", "GET " + nar + "?a=b HTTP/1.1\r\n" + host + "\r\n", false},
		{"nix-serve nar", "GET " + storeNar + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"nix-serve nar HEAD", "HEAD " + storeNar + " HTTP/1.1\r\n" + host + "\r\n", true},
		{"nix-serve nar, old form", "GET /nar/" + u.Hash + ".nar HTTP/1.1\r\n" + host + "\r\n", false},
		{"nix-serve nar, another NarHash", "GET /nar/" + u.Hash + "-" + absentNar[5:57] + ".nar HTTP/1.1\r\n" + host + "\r\n", false},
		{"nix-serve nar, bad NarHash", "GET /nar/" + u.Hash + "-" + strings.Repeat("e", 52) + ".nar HTTP/1.1\r\n" + host + "\r\n", false},
		{"harmonia nar", "GET /nar/" + narHash + ".nar?hash=" + u.Hash + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"harmonia nar HEAD", "HEAD /nar/" + narHash + ".nar?hash=" + u.Hash + " HTTP/1.1\r\n" + host + "\r\n", true},
		{"harmonia nar, bad hash", "GET /nar/" + narHash + ".nar?hash=" + u.Hash[1:] + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"nar traversal", "GET /nar/../" + u.Hash + ".narinfo HTTP/1.1\r\n" + host + "\r\n", false},
		{"invalid hash", "GET /" + strings.Repeat("e", 32) + ".narinfo HTTP/1.1\r\n" + host + "\r\n", false},
		{"query", "GET " + u.NarInfoPath() + "?x=1 HTTP/1.1\r\n" + host + "\r\n", false},
		{"cache info", "GET /nix-cache-info HTTP/1.1\r\n" + host + "\r\n", false},
		{"put without token", "PUT " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nabc", false},
		{"no host", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n\r\n", false},
		{"two hosts", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + host + "\r\n", false},
		{"HTTP/1.0", "GET " + u.NarInfoPath() + " HTTP/1.0\r\n\r\n", false},
		{"lower-case method", "get " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "\r\n", false},
		{"obs-fold", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "X-A: b\r\n c\r\n\r\n", false},
		{"space before colon", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n", false},
		{"bare LF", "GET " + u.NarInfoPath() + " HTTP/1.1\n" + host + "\r\n", false},
		// No CRLFCRLF ever comes: the fast path must not wait for one.
		{"bare LF throughout", "GET " + u.NarInfoPath() + " HTTP/1.1\nHost: cache\n\n", false},
		{"bare LF ends the head", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "\n", false},
		{"bare LF ends a miss", "HEAD " + miss + " HTTP/1.1\nHost: cache\n\n", true},
		{"NUL in a value", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "X-A: \x00\r\n\r\n", false},
		{"body on a GET", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "Content-Length: 2\r\n\r\nab", false},
		{"chunked", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"upgrade", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
		{"bad host", "GET " + u.NarInfoPath() + " HTTP/1.1\r\nHost: a b\r\n\r\n", false},
		{"huge head", "GET " + u.NarInfoPath() + " HTTP/1.1\r\n" + host + "X-Pad: " + strings.Repeat("p", 6000) + "\r\n\r\n", false},
		{"traversal", "GET /../" + u.Hash + ".narinfo HTTP/1.1\r\n" + host + "\r\n", false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := fs.Answered()
			want := exchange(t, tc.Addr, c.raw, 1, c.head)
			got := exchange(t, fast, c.raw, 1, c.head)
			if strings.Join(got, "\n---\n") != strings.Join(want, "\n---\n") {
				t.Errorf("fast path answered\n%s\nnet/http answered\n%s", strings.Join(got, "\n---\n"), strings.Join(want, "\n---\n"))
			}
			if n := fs.Answered() - before; i < fastCases && n != 1 || i >= fastCases && n != 0 {
				t.Errorf("the fast path answered %d requests of this case", n)
			}
		})
	}
}

// TestFastPathHandsOffMidConnection mixes fast-path and router requests on one connection,
// pipelined: every answer must come, in order, and a NAR sent by either whole.
func TestFastPathHandsOffMidConnection(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "mixed", "zstd")
	u.store(t, tc)
	fast, fs := startFast(t, tc, 30*time.Second)
	get := func(p string) string { return "GET " + p + " HTTP/1.1\r\nHost: cache\r\n\r\n" }
	miss := "/" + storeHash("nothing") + ".narinfo"
	raw := get(u.NarInfoPath()) + get(miss) + get(u.NarPath) + get(u.NarInfoPath()) +
		get("/nix-cache-info") + get(miss) + get(u.NarPath)
	got := exchange(t, fast, raw, 7, false)
	want := exchange(t, tc.Addr, raw, 7, false)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("answer %d: fast path\n%s\nnet/http\n%s", i+1, got[i], want[i])
		}
	}
	if n := fs.Answered(); n != 4 {
		t.Errorf("the fast path answered %d requests, want the 4 before /nix-cache-info", n)
	}
	for _, i := range []int{2, 6} { // by the fast path, then by net/http
		if !strings.HasPrefix(got[i], "200") || !strings.HasSuffix(got[i], string(u.File)) {
			t.Errorf("answer %d, the NAR, did not come whole: %.200q", i+1, got[i])
		}
	}
}

// TestFastPathLogsAndCounts: a fast-path answer gets the router's access log line and metrics,
// through slog's handler and through cached's own (internal/logging), which writes it itself.
func TestFastPathLogsAndCounts(t *testing.T) {
	for _, handler := range []string{"slog", "logging"} {
		t.Run(handler, func(t *testing.T) {
			logs := &syncBuffer{}
			flush := func() {}
			tc := newTestCacheConfig(t, func(c *server.Config) {
				if handler == "slog" {
					c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
					return
				}
				b := logging.NewBuffer(logs)
				t.Cleanup(b.Close)
				c.Log, flush = logging.New(slog.LevelInfo, false, b), b.Flush
			})
			fast, _ := startFast(t, tc, 30*time.Second)
			miss := "/" + storeHash("logged") + ".narinfo"
			exchange(t, fast, "HEAD "+miss+" HTTP/1.1\r\nHost: cache\r\nX-Request-Id: trace-7\r\n\r\n", 1, true)
			flush()
			line := regexp.MustCompile(`(?m)^time=\S+ level=INFO msg=request method=HEAD path=` + regexp.QuoteMeta(miss) +
				` status=404 bytes=0 dur_ms=\d+ remote=127\.0\.0\.1:\d+ req_id=trace-7\n`)
			if !line.MatchString(logs.String()) {
				t.Errorf("no access log line for the fast-path answer; log:\n%s", logs.String())
			}
			metrics := tc.get(t, "/metrics").Body
			for _, want := range []string{
				`cached_narinfo_lookups_total{result="miss"} 1`,
				`cached_http_requests_total{code="404",method="HEAD",route="/{file}"} 1`,
			} {
				if !strings.Contains(string(metrics), want) {
					t.Errorf("metrics lack %s", want)
				}
			}
		})
	}
}

// TestFastPathSlowHead: a request head that trickles in slower than ReadHeaderTimeout is dropped
// (slow-loris clients cannot hold connections open), and one that arrives in pieces in time is
// answered.
func TestFastPathSlowHead(t *testing.T) {
	tc := newTestCache(t)
	fast, _ := startFast(t, tc, 300*time.Millisecond)
	miss := "/" + storeHash("slow") + ".narinfo"
	c, err := net.Dial("tcp", fast)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET "+miss+" HTTP/1.1\r\n")
	time.Sleep(100 * time.Millisecond)
	io.WriteString(c, "Host: cache\r\n\r\n") // in time
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("head in two pieces: %v, %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	start := time.Now()
	io.WriteString(c, "GET "+miss+" HTTP/1.1\r\n")
	for i := 0; i < 20; i++ { // one header byte every 100 ms, never ending
		if _, err := io.WriteString(c, "X"); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the server answered a head that never ended")
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("the connection stayed open %v", d)
	}
}

// serveOne serves tc through the fast path in front of hs, for a test that shuts it down itself
// (Serve's result comes on done), and opens one connection to it.
func serveOne(t *testing.T, tc *testCache, hs *http.Server) (*server.FastServer, chan error, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := server.NewFastServer(tc.Handler, hs)
	done := make(chan error, 1)
	go func() { done <- fs.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return fs, done, c
}

// TestFastPathShutdown: Shutdown closes idle connections and returns.
func TestFastPathShutdown(t *testing.T) {
	tc := newTestCache(t)
	fs, done, c := serveOne(t, tc, &http.Server{Handler: tc.Handler})
	io.WriteString(c, "GET /"+storeHash("x")+".narinfo HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 404 {
		t.Fatalf("%v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fs.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Errorf("idle connection still open after Shutdown (read: %v)", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestFastPathBigNar: a NAR far larger than the socket buffers comes whole through the fast
// path's sendfile, and a client that hangs up halfway leaves a log line with the error, a
// closed connection, and a server that goes on answering.
func TestFastPathBigNar(t *testing.T) {
	logs := &syncBuffer{}
	tc := newTestCacheConfig(t, func(c *server.Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		c.MaxUploadSize = 64 << 20
	})
	contents := make([]byte, 24<<20)
	rand.NewChaCha8([32]byte{1}).Read(contents)
	u := newUploadNAR(t, "big", "none", handNAR("nix-archive-1", "(", "type", "regular", "contents", string(contents), ")"))
	u.store(t, tc)
	nar := "/" + tc.narinfoOf(t, u).URL
	fast, fs := startFast(t, tc, 30*time.Second)

	resp, err := http.Get("http://" + fast + nar)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v, %v", nar, resp.Status, err)
	}
	if want := tc.get(t, nar).Body; !bytes.Equal(body, want) {
		t.Fatalf("fast path sent %d bytes, the router %d, or different ones", len(body), len(want))
	}
	if fs.Answered() != 1 {
		t.Fatalf("the fast path answered %d requests, want 1", fs.Answered())
	}

	c, err := net.Dial("tcp", fast)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET "+nar+" HTTP/1.1\r\nHost: cache\r\nX-Request-Id: hung-up\r\n\r\n")
	if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetLinger(0) // a reset, not a polite close: the server's next write fails
	c.Close()
	logged := regexp.MustCompile(`path=` + regexp.QuoteMeta(nar) + ` status=200 bytes=\d+ dur_ms=\d+ remote=\S+ req_id=hung-up err=`)
	for deadline := time.Now().Add(5 * time.Second); !logged.MatchString(logs.String()); {
		if time.Now().After(deadline) {
			t.Fatalf("no access log line with the error of the broken download; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := exchange(t, fast, "HEAD "+nar+" HTTP/1.1\r\nHost: cache\r\n\r\n", 1, true); !strings.HasPrefix(got[0], "200") {
		t.Errorf("after a broken download the fast path answered %q", got[0])
	}
}

// TestFastPathIdleTimeout: a connection that keeps asking stays open past IdleTimeout (the fast
// path moves its deadline lazily, but never so lazily that a busy client is dropped), and one
// that goes quiet is closed after about IdleTimeout.
func TestFastPathIdleTimeout(t *testing.T) {
	tc := newTestCache(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const idle = 500 * time.Millisecond
	fs := server.NewFastServer(tc.Handler, &http.Server{Handler: tc.Handler, ReadHeaderTimeout: time.Minute, IdleTimeout: idle})
	go fs.Serve(ln)
	defer fs.Shutdown(context.Background())

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	ask := func(i int) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET /" + storeHash("idle") + ".narinfo HTTP/1.1\r\nHost: cache\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	start := time.Now()
	for i := 0; time.Since(start) < 3*idle; i++ { // 3 idle timeouts of requests 0.3 idle apart
		if i > 0 {
			time.Sleep(3 * idle / 10)
		}
		if err := ask(i); err != nil {
			t.Fatalf("a busy connection was dropped after %v: %v", time.Since(start), err)
		}
	}
	before := fs.Answered()
	quiet := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * idle))
	if n, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: read %v, %v; want EOF when the server closes it", n, err)
	}
	if d := time.Since(quiet); d < idle*8/10 || d > 4*idle {
		t.Fatalf("an idle connection was closed after %v, want about %v", d, idle)
	}
	if before == 0 {
		t.Fatal("the fast path answered none of the requests")
	}
}

// TestFastPathPipelinedBeforePartialHead: answers to pipelined requests go out while the next
// head is still arriving, and are not lost when it never completes.
func TestFastPathPipelinedBeforePartialHead(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "pipelined", "zstd")
	u.store(t, tc)
	fast, _ := startFast(t, tc, 30*time.Second)
	full := "GET " + u.NarInfoPath() + " HTTP/1.1\r\nHost: cache\r\n\r\n"
	partial := "GET " + u.NarInfoPath() + " HTTP/1.1\r\nHo"
	for _, hangUp := range []bool{false, true} {
		c, err := net.Dial("tcp", fast)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, full+full+partial) // one write: both heads reach the server together
		if hangUp {
			c.(*net.TCPConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) // far below ReadHeaderTimeout
		br := bufio.NewReader(c)
		for i := 1; i <= 2; i++ {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("hang-up %v: answer %d to the complete heads: %v", hangUp, i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("StorePath: /nix/store/"+u.Hash+"-")) {
				t.Fatalf("hang-up %v: answer %d: %d %q", hangUp, i, resp.StatusCode, body)
			}
		}
	}
}

// TestFastPathShutdownMidHead: a connection whose next head has only partly arrived has no
// request in flight; Shutdown closes it at once, as net/http does, instead of waiting for
// ReadHeaderTimeout.
func TestFastPathShutdownMidHead(t *testing.T) {
	tc := newTestCache(t)
	fs, done, c := serveOne(t, tc, &http.Server{Handler: tc.Handler, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute})
	miss := "/" + storeHash("mid-head") + ".narinfo"
	io.WriteString(c, "GET "+miss+" HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 404 {
		t.Fatalf("%v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	io.WriteString(c, "GET "+miss+" HTTP/1.1\r\nHo")
	time.Sleep(100 * time.Millisecond) // the server is waiting for the rest of the head
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := fs.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v after %v", err, time.Since(start))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Shutdown took %v with a head half-read (ReadHeaderTimeout is a minute)", d)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("connection still open after Shutdown (read: %v)", err)
	}
}

// TestFastPathEmptyNar: the head of an empty NAR is not held back waiting for a body
// (MSG_MORE keeps a lone head in the kernel for about 200 ms).
func TestFastPathEmptyNar(t *testing.T) {
	tc := newTestCache(t)
	name := "nar/" + strings.Repeat("1", 52) + ".nar"
	if err := os.MkdirAll(filepath.Join(tc.Root, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tc.Root, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fast, fs := startFast(t, tc, 30*time.Second)
	raw := "GET /" + name + " HTTP/1.1\r\nHost: cache\r\n\r\n"
	want := exchange(t, tc.Addr, raw, 1, false)
	if got := exchange(t, fast, raw, 1, false); got[0] != want[0] {
		t.Fatalf("fast path answered\n%s\nnet/http answered\n%s", got[0], want[0])
	}
	c, err := net.Dial("tcp", fast)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	const n = 10
	before := fs.Answered()
	start := time.Now()
	for range n { // one at a time: each answer is read before the next request is sent
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK || resp.ContentLength != 0 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
	}
	if got := fs.Answered() - before; got != n {
		t.Fatalf("the fast path answered %d of %d", got, n)
	}
	// Held back, n answers take at least n*200 ms; sent at once, a few ms.
	if d := time.Since(start); d > n*100*time.Millisecond {
		t.Errorf("%d empty NARs took %v", n, d)
	}
}

// TestFastPathRedirectsAsTheRouter: with NAR redirects on, a stored NAR's GET is the router's
// 307 on the fast path too, never the NAR itself.
func TestFastPathRedirectsAsTheRouter(t *testing.T) {
	tc := newTestCacheConfig(t, func(c *server.Config) {
		c.NarRedirect = &server.NarRedirect{URL: func(_ context.Context, name string) (string, error) {
			return "https://cdn.example/" + name, nil
		}}
	})
	u := newUpload(t, "redirected", "zstd")
	u.store(t, tc)
	fast, _ := startFast(t, tc, 30*time.Second)
	nar := "/" + tc.narinfoOf(t, u).URL
	for _, method := range []string{"GET", "HEAD"} {
		raw := method + " " + nar + " HTTP/1.1\r\nHost: cache\r\n\r\n"
		want := exchange(t, tc.Addr, raw, 1, method == "HEAD")
		if !strings.HasPrefix(want[0], "307") {
			t.Fatalf("%s: the router answered %q, want a 307", method, want[0])
		}
		if got := exchange(t, fast, raw, 1, method == "HEAD"); got[0] != want[0] {
			t.Errorf("%s: fast path answered\n%s\nnet/http answered\n%s", method, got[0], want[0])
		}
	}
}
