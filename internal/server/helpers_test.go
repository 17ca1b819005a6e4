package server_test

// Helpers shared by the HTTP tests: a real server stack (disk backend, Badger index, signing key,
// cache, server) behind httptest on 127.0.0.1, NAR and narinfo builders, and a small request
// helper that sends the upload token the way nix does (HTTP Basic password from its netrc-file).

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/server"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"
)

const (
	testToken     = "tok"
	testMaxUpload = 4 << 20
	testMaxMeta   = 64 << 10
	// secretContent is what the files named secret-key around the backend root hold; no response
	// may ever contain it.
	secretContent = "test-1:SECRET-KEY-MUST-NEVER-BE-SERVED"
)

// testCache is one running server stack.
type testCache struct {
	URL     string         // http://127.0.0.1:PORT
	Addr    string         // 127.0.0.1:PORT
	Handler *server.Server // for calling the handler directly
	Pub     signing.PublicKey
	secret  string // the signing key as its file holds it
	Root    string // the disk backend's root
	Base    string // a directory two levels above Root, holding secret-key files
	client  *http.Client
	logs    *syncBuffer
}

// syncBuffer collects log output from handler goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestCache starts the whole stack in-process. The layout on disk is
//
//	Base/secret-key         (next to the backend root's parent)
//	Base/data/secret-key    (next to the backend root)
//	Base/data/cache/        the backend root
//
// so that a path traversal of one or two levels would reach a secret-key file.
func newTestCache(tb testing.TB) *testCache {
	tb.Helper()
	return newTestCacheWith(tb, cache.Options{}, nil)
}

func newTestCacheConfig(tb testing.TB, edit func(*server.Config)) *testCache {
	tb.Helper()
	return newTestCacheWith(tb, cache.Options{}, edit)
}

// newTestCacheWith starts a stack with the given cache options (store compression) and server
// configuration edits.
func newTestCacheWith(tb testing.TB, opts cache.Options, edit func(*server.Config)) *testCache {
	tb.Helper()
	return newTestCacheOn(tb, opts, edit, nil)
}

// newTestCacheOn is newTestCacheWith whose disk backend is wrapped by wrap (if not nil), for
// faults a real disk cannot be made to produce.
func newTestCacheOn(tb testing.TB, opts cache.Options, edit func(*server.Config), wrap func(backend.Backend) backend.Backend) *testCache {
	tb.Helper()
	base := tb.TempDir()
	root := filepath.Join(base, "data", "cache")
	for _, p := range []string{filepath.Join(base, "secret-key"), filepath.Join(base, "data", "secret-key")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(secretContent+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))

	be, err := disk.Open(root)
	if err != nil {
		tb.Fatal(err)
	}
	ix, err := index.Open(tb.TempDir(), log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ix.Close(); err != nil {
			tb.Errorf("closing index: %v", err)
		}
	})
	key, err := signing.Generate("test-1")
	if err != nil {
		tb.Fatal(err)
	}
	var cb backend.Backend = be
	if wrap != nil {
		cb = wrap(be)
	}
	c, err := cache.New(context.Background(), cb, ix, key, log, opts)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := server.Config{
		Cache:         c,
		Log:           log,
		UploadTokens:  []string{testToken},
		MaxUploadSize: testMaxUpload,
		MaxMetaSize:   testMaxMeta,
	}
	if edit != nil {
		edit(&cfg)
	}
	srv := server.New(cfg)
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener = server.WriteIdleListener(hs.Listener, cfg.WriteIdleTimeout)
	hs.Start()
	tc := &testCache{
		URL:     hs.URL,
		Addr:    hs.Listener.Addr().String(),
		Handler: srv,
		Pub:     key.Public(),
		secret:  key.String(),
		Root:    root,
		Base:    base,
		// No transparent gzip: tests see exactly what the server sends.
		client: &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 32}},
		logs:   logs,
	}
	tb.Cleanup(func() {
		tc.client.CloseIdleConnections()
		hs.Close()
		if tb.Failed() {
			tb.Logf("server log (warn and above):\n%s", logs.String())
		}
	})
	return tc
}

func (tc *testCache) secretKeyString() string { return tc.secret }

// response is a fully read HTTP answer.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *response) String() string {
	body := string(r.Body)
	if len(body) > 300 {
		body = body[:300] + "..."
	}
	return fmt.Sprintf("%d %q", r.Status, body)
}

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func withBasicAuth(user, pw string) reqOpt { return func(r *http.Request) { r.SetBasicAuth(user, pw) } }

func withoutAuth() reqOpt { return func(r *http.Request) { r.Header.Del("Authorization") } }

// do sends one request. PUTs carry the upload token as nix does (Basic, any login) unless an
// option says otherwise. path is sent as it is written (it must already be escaped).
func (tc *testCache) do(tb testing.TB, method, path string, body []byte, opts ...reqOpt) *response {
	tb.Helper()
	resp, err := tc.try(method, path, body, opts...)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// try is do without a testing.TB, for goroutines.
func (tc *testCache) try(method, path string, body []byte, opts ...reqOpt) (*response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, tc.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if method == http.MethodPut {
		req.SetBasicAuth("nix", testToken)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := tc.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

func (tc *testCache) get(tb testing.TB, path string, opts ...reqOpt) *response {
	tb.Helper()
	return tc.do(tb, http.MethodGet, path, nil, opts...)
}

func (tc *testCache) head(tb testing.TB, path string) *response {
	tb.Helper()
	return tc.do(tb, http.MethodHead, path, nil)
}

func (tc *testCache) put(tb testing.TB, path string, body []byte, opts ...reqOpt) *response {
	tb.Helper()
	return tc.do(tb, http.MethodPut, path, body, opts...)
}

// mustStatus fails the test unless r has the wanted status.
func mustStatus(tb testing.TB, what string, r *response, want int) {
	tb.Helper()
	if r.Status != want {
		tb.Fatalf("%s: got %s, want %d", what, r, want)
	}
}

// files lists the regular files under the backend root (relative, slash-separated), including
// temporary ones.
func (tc *testCache) files(tb testing.TB) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(tc.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(tc.Root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// isTemporary reports whether a backend object is an upload in progress (disk temporary files,
// staged uploads awaiting verification).
func isTemporary(name string) bool {
	return strings.HasPrefix(name, ".tmp/") || strings.HasPrefix(name, cache.StagingPrefix)
}

// --- NARs -------------------------------------------------------------------------------------

// buildNAR writes a small store path with every node kind: a directory holding an executable,
// a regular file, an empty file and a symlink. seed makes the contents (and so the hashes) unique.
func buildNAR(tb testing.TB, seed string) []byte {
	tb.Helper()
	script := "#!/bin/sh\necho hello from " + seed + "\n"
	data := strings.Repeat("data of "+seed+"\n", 200)
	var buf bytes.Buffer
	w := nar.NewWriter(&buf)
	steps := []func() error{
		w.StartDirectory,
		func() error { return w.Entry("bin") },
		w.StartDirectory,
		func() error { return w.Entry("hello") },
		func() error { return w.File(true, int64(len(script)), strings.NewReader(script)) },
		w.EndDirectory,
		func() error { return w.Entry("empty") },
		func() error { return w.File(false, 0, nil) },
		func() error { return w.Entry("sh") },
		func() error { return w.Symlink("bin/hello") },
		func() error { return w.Entry("share") },
		func() error { return w.File(false, int64(len(data)), strings.NewReader(data)) },
		w.EndDirectory,
		w.Close,
	}
	for i, step := range steps {
		if err := step(); err != nil {
			tb.Fatalf("building NAR, step %d: %v", i, err)
		}
	}
	return buf.Bytes()
}

// narString appends s in NAR string encoding: uint64-LE length, bytes, zero padding to 8.
func narString(b *bytes.Buffer, s string) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	b.Write(n[:])
	b.WriteString(s)
	b.Write(make([]byte, (8-len(s)%8)%8))
}

// handNAR hand-assembles a NAR from tokens, so that invalid ones can be made.
func handNAR(tokens ...string) []byte {
	var b bytes.Buffer
	for _, t := range tokens {
		narString(&b, t)
	}
	return b.Bytes()
}

// dirNAR is a hand-assembled directory NAR whose entries are the given names, each a regular
// file with contents "x", in the order given.
func dirNAR(names ...string) []byte {
	toks := []string{"nix-archive-1", "(", "type", "directory"}
	for _, n := range names {
		toks = append(toks, "entry", "(", "name", n, "node", "(", "type", "regular", "contents", "x", ")", ")")
	}
	toks = append(toks, ")")
	return handNAR(toks...)
}

var narExt = map[string]string{"none": "", "xz": ".xz", "zstd": ".zst", "bzip2": ".bz2", "br": ".br"}

// compress compresses data as a narinfo Compression value says (or as a Content-Encoding).
func compress(tb testing.TB, method string, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch method {
	case "none", "identity", "":
		return append([]byte(nil), data...)
	case "xz":
		w, err = xz.NewWriter(&buf)
	case "zstd":
		w, err = zstd.NewWriter(&buf)
	case "br":
		w = brotli.NewWriter(&buf)
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "bzip2":
		// Go has no bzip2 writer; use the tool when there is one.
		path, lerr := exec.LookPath("bzip2")
		if lerr != nil {
			if os.Getenv("CI") == "true" {
				tb.Fatal("bzip2 not installed (./test.sh installs it)")
			}
			tb.Skip("bzip2 not installed")
		}
		cmd := exec.Command(path, "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			tb.Fatalf("bzip2: %v", err)
		}
		return out
	default:
		tb.Fatalf("compress: unknown method %q", method)
	}
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// decompress undoes a narinfo Compression.
func decompress(tb testing.TB, method string, data []byte) []byte {
	tb.Helper()
	var r io.Reader
	switch method {
	case "none":
		return data
	case "xz":
		xr, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			tb.Fatalf("xz: %v", err)
		}
		r = xr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(data))
		if err != nil {
			tb.Fatalf("zstd: %v", err)
		}
		defer zr.Close()
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(data))
	case "bzip2", "":
		r = bzip2.NewReader(bytes.NewReader(data))
	default:
		tb.Fatalf("decompress: unknown compression %q", method)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		tb.Fatalf("decompressing %s: %v", method, err)
	}
	return out
}

func sha256Hash(data []byte) narinfo.Hash {
	sum := sha256.Sum256(data)
	return narinfo.Hash{Algo: "sha256", Digest: sum[:]}
}

// storeHash derives a valid store path hash part (32 nix32 characters) from s.
func storeHash(s string) string {
	sum := sha256.Sum256([]byte("store path " + s))
	return nixbase32.EncodeToString(sum[:20])
}

// upload is one store path ready to be sent: its NAR, the compressed file, and a narinfo.
type upload struct {
	Hash        string // store path hash part
	NAR         []byte // uncompressed
	File        []byte // compressed, as PUT to NarPath
	Compression string
	NarPath     string // "/nar/<filehash>.nar.xz"
	Info        narinfo.NarInfo
}

// newUpload builds a store path named name with the given compression, referring to itself and
// to one other path, with a deriver and a system.
func newUpload(tb testing.TB, name, compression string) *upload {
	tb.Helper()
	return newUploadNAR(tb, name, compression, buildNAR(tb, name))
}

// newUploadNAR is newUpload for given NAR bytes (valid or not).
func newUploadNAR(tb testing.TB, name, compression string, narBytes []byte) *upload {
	tb.Helper()
	file := compress(tb, compression, narBytes)
	fileHash := sha256Hash(file)
	hash := storeHash(name)
	url := "nar/" + nixbase32.EncodeToString(fileHash.Digest) + ".nar" + narExt[compression]
	return &upload{
		Hash:        hash,
		NAR:         narBytes,
		File:        file,
		Compression: compression,
		NarPath:     "/" + url,
		Info: narinfo.NarInfo{
			StorePath:   "/nix/store/" + hash + "-" + name,
			URL:         url,
			Compression: compression,
			FileHash:    fileHash,
			FileSize:    uint64(len(file)),
			NarHash:     sha256Hash(narBytes),
			NarSize:     uint64(len(narBytes)),
			// Itself only: a reference to another path must be in the cache first (see
			// TestNarInfoNeedsItsReferences).
			References: []string{hash + "-" + name},
			Deriver:    storeHash("drv-of-"+name) + "-" + name + ".drv",
			System:     "x86_64-linux",
		},
	}
}

func (u *upload) NarInfoPath() string { return "/" + u.Hash + ".narinfo" }

// Text is the narinfo as an uploader sends it.
func (u *upload) Text() []byte { return u.Info.Bytes() }

// store uploads the NAR then the narinfo and fails the test unless both are accepted.
func (u *upload) store(tb testing.TB, tc *testCache) {
	tb.Helper()
	mustStatus(tb, "PUT "+u.NarPath, tc.put(tb, u.NarPath, u.File, withHeader("Content-Type", "application/x-nix-nar")), http.StatusOK)
	mustStatus(tb, "PUT "+u.NarInfoPath(), tc.put(tb, u.NarInfoPath(), u.Text(), withHeader("Content-Type", "text/x-nix-narinfo")), http.StatusOK)
}

// narinfoOf GETs the served narinfo of u and checks it is signed by the server.
func (tc *testCache) narinfoOf(tb testing.TB, u *upload) *narinfo.NarInfo {
	tb.Helper()
	r := tc.get(tb, u.NarInfoPath())
	mustStatus(tb, "GET "+u.NarInfoPath(), r, http.StatusOK)
	return tc.parseServed(tb, r.Body)
}

// checkServedNar GETs the NAR a served narinfo points at, as a client does (URL relative to the
// cache root), and checks what the client checks: the file's size and hash are the narinfo's, and
// it decompresses per Compression to narBytes. It also checks the headers a resuming client relies
// on. It returns the answer.
func (tc *testCache) checkServedNar(tb testing.TB, ni *narinfo.NarInfo, narBytes []byte) *response {
	tb.Helper()
	if strings.HasPrefix(ni.URL, "/") || !strings.HasPrefix(ni.URL, "nar/") {
		tb.Errorf("served URL %q, want nar/... with no leading /", ni.URL)
	}
	r := tc.get(tb, "/"+ni.URL)
	mustStatus(tb, "GET "+ni.URL, r, http.StatusOK)
	if uint64(len(r.Body)) != ni.FileSize {
		tb.Errorf("GET %s: %d bytes, narinfo FileSize %d", ni.URL, len(r.Body), ni.FileSize)
	}
	if got := sha256Hash(r.Body); !got.Equal(ni.FileHash) {
		tb.Errorf("GET %s: bytes hash to %s, narinfo FileHash %s", ni.URL, got, ni.FileHash)
	}
	if got := decompress(tb, ni.Compression, r.Body); !bytes.Equal(got, narBytes) {
		tb.Errorf("GET %s: decompresses (%s) to %d bytes that are not the uploaded %d-byte NAR", ni.URL, ni.Compression, len(got), len(narBytes))
	}
	if cl := r.Header.Get("Content-Length"); cl != fmt.Sprint(len(r.Body)) {
		tb.Errorf("GET %s: Content-Length %q for %d bytes", ni.URL, cl, len(r.Body))
	}
	if ar := r.Header.Get("Accept-Ranges"); ar != "bytes" {
		tb.Errorf("GET %s: Accept-Ranges %q, want bytes (clients resume only then)", ni.URL, ar)
	}
	if r.Header.Get("ETag") == "" {
		tb.Errorf("GET %s: no ETag", ni.URL)
	}
	if ce, ok := r.Header["Content-Encoding"]; ok {
		tb.Errorf("GET %s: Content-Encoding %q: the client would decode twice", ni.URL, ce)
	}
	return r
}

// parseServed parses a served narinfo and checks that it carries a signature by the server's key
// that verifies. It returns the parsed narinfo.
func (tc *testCache) parseServed(tb testing.TB, body []byte) *narinfo.NarInfo {
	tb.Helper()
	ni, err := narinfo.Parse(body)
	if err != nil {
		tb.Fatalf("served narinfo does not parse: %v\n%s", err, body)
	}
	n := 0
	for _, s := range ni.Sigs {
		if strings.HasPrefix(s, tc.Pub.Name+":") {
			n++
			if !tc.Pub.Verify(ni.Fingerprint(), s) {
				tb.Fatalf("server signature %q does not verify for fingerprint %q", s, ni.Fingerprint())
			}
		}
	}
	if n != 1 {
		tb.Fatalf("served narinfo has %d signatures by %s, want 1:\n%s", n, tc.Pub.Name, body)
	}
	return ni
}

func hexString(b []byte) string    { return hex.EncodeToString(b) }
func base64String(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func nix32(b []byte) string { return nixbase32.EncodeToString(b) }
