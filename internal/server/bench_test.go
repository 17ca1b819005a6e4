package server_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/logging"
	"github.com/cached-dev/cached/internal/server"
)

// The narinfo lookup is the hot path: substituters ask for every path of a closure, and most
// answers are misses.

func BenchmarkGetNarInfoHit(b *testing.B) {
	tc := newTestCache(b)
	u := newUpload(b, "bench", "xz")
	u.store(b, tc)
	benchGet(b, tc, u.NarInfoPath(), http.StatusOK)
}

func BenchmarkGetNarInfoMiss(b *testing.B) {
	tc := newTestCache(b)
	benchGet(b, tc, "/"+storeHash("missing")+".narinfo", http.StatusNotFound)
}

func benchGet(b *testing.B, tc *testCache, path string, want int) {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		tc.Handler.ServeHTTP(rec, req)
		if rec.Code != want {
			b.Fatalf("GET %s: %d, want %d", path, rec.Code, want)
		}
	}
}

// The same through the fast path on a loopback connection, as a substituter sees it: one
// keep-alive connection, one request at a time. Allocations are the server's (the client below
// allocates nothing per request) plus the runtime's.

// newLoggingCache is a test cache that writes an access line per request, as cmd/cached's
// logger does (to nowhere), and bounds writes as cached serve does by default, so that the
// benchmarks count their cost.
func newLoggingCache(b *testing.B) *testCache {
	return newTestCacheConfig(b, func(c *server.Config) {
		buf := logging.NewBuffer(io.Discard)
		b.Cleanup(buf.Close)
		c.Log = logging.New(slog.LevelInfo, false, buf)
		c.WriteIdleTimeout = time.Minute // cached serve's default
	})
}

func BenchmarkFastPathNarInfoHit(b *testing.B) {
	tc := newLoggingCache(b)
	u := newUpload(b, "bench", "zstd")
	u.store(b, tc)
	benchFast(b, tc, u.NarInfoPath(), "200")
}

func BenchmarkFastPathNarInfoMiss(b *testing.B) {
	benchFast(b, newLoggingCache(b), "/"+storeHash("missing")+".narinfo", "404")
}

func BenchmarkFastPathNar(b *testing.B) {
	tc := newLoggingCache(b)
	u := newUpload(b, "bench", "zstd")
	u.store(b, tc)
	benchFast(b, tc, u.NarPath, "200")
}

func benchFast(b *testing.B, tc *testCache, path, wantStatus string) {
	addr, fs := startFast(b, tc, 30*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: cache\r\nX-Request-Id: bench\r\n\r\n")
	br := bufio.NewReaderSize(c, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readAnswer(br, wantStatus); err != nil {
			b.Fatalf("GET %s: %v", path, err)
		}
	}
	b.StopTimer()
	if fs.Answered() == 0 {
		b.Fatal("the fast path answered nothing")
	}
}

// readAnswer reads one answer with a Content-Length body and checks its status code, without
// allocating.
func readAnswer(br *bufio.Reader, wantStatus string) error {
	length := int64(-1)
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if first && !bytes.HasPrefix(line, []byte("HTTP/1.1 "+wantStatus+" ")) {
			return fmt.Errorf("answer %q", line)
		}
		if len(line) == 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			length = 0
			for _, c := range bytes.TrimSpace(v) {
				length = length*10 + int64(c-'0')
			}
		}
	}
	if length < 0 {
		return errors.New("no Content-Length")
	}
	_, err := br.Discard(int(length))
	return err
}

// BenchmarkFastPathBigNar downloads a 64 MiB NAR file through the fast path (sendfile), one
// request at a time on one connection: the throughput a big substitution gets.
func BenchmarkFastPathBigNar(b *testing.B) {
	tc := newLoggingCache(b)
	name := "nar/1" + strings.Repeat("b", 51) + ".nar"
	if err := os.MkdirAll(filepath.Join(tc.Root, "nar"), 0o755); err != nil {
		b.Fatal(err)
	}
	content := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{7}).Read(content)
	if err := os.WriteFile(filepath.Join(tc.Root, name), content, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(content)))
	benchFast(b, tc, "/"+name, "200")
}
