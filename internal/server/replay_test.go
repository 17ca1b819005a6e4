package server_test

// Replays of what nix clients send and read (protocol.md, "Reading", "Writing" and the
// conformance checklist), over real HTTP.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/ulikunitz/xz"
)

func TestNixCacheInfoAnnouncesStoreDir(t *testing.T) {
	tc := newTestCache(t)
	r := tc.get(t, "/nix-cache-info")
	mustStatus(t, "GET /nix-cache-info", r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); ct != "text/x-nix-cache-info" {
		t.Errorf("Content-Type = %q, want text/x-nix-cache-info", ct)
	}
	for _, line := range []string{"StoreDir: /nix/store", "WantMassQuery: 1", "Priority: 40"} {
		if !slices.Contains(strings.Split(string(r.Body), "\n"), line) {
			t.Errorf("nix-cache-info lacks the line %q:\n%s", line, r.Body)
		}
	}
	// nix copy PUTs one when it believes the cache is new; the server keeps its own.
	mustStatus(t, "PUT /nix-cache-info", tc.put(t, "/nix-cache-info", []byte("StoreDir: /nix/store\n")), http.StatusOK)
	r = tc.put(t, "/nix-cache-info", []byte("StoreDir: /gnu/store\n"))
	mustStatus(t, "PUT /nix-cache-info with another StoreDir", r, http.StatusBadRequest)
	if !bytes.Contains(r.Body, []byte("StoreDir")) {
		t.Errorf("refusal does not name StoreDir: %s", r)
	}
}

func TestMissingNarInfoIs404ForGetAndHead(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "absent", "xz")
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		r := tc.do(t, method, u.NarInfoPath(), nil)
		mustStatus(t, method+" missing narinfo", r, http.StatusNotFound)
		if method == http.MethodGet && len(r.Body) > 64 {
			t.Errorf("404 body is %d bytes, want a short message: %q", len(r.Body), r.Body)
		}
		mustStatus(t, method+" missing nar", tc.do(t, method, u.NarPath, nil), http.StatusNotFound)
		mustStatus(t, method+" missing listing", tc.do(t, method, "/"+u.Hash+".ls", nil), http.StatusNotFound)
	}
}

// TestUploadThenReadEachCompression is what `nix copy --to` followed by a substitution does, for
// every compression the client offers, with NARs stored as uploaded and recompressed to the
// default store compression.
func TestUploadThenReadEachCompression(t *testing.T) {
	uploader, err := signing.Generate("uploader-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, store := range []string{"as-uploaded", ""} {
		for _, comp := range []string{"none", "xz", "zstd", "br", "bzip2"} {
			storeName := store
			if storeName == "" {
				storeName = "default"
			}
			t.Run(storeName+"/"+comp, func(t *testing.T) {
				tc := newTestCacheWith(t, cache.Options{StoreCompression: store}, nil)
				u := newUpload(t, "hello-"+comp, comp)
				uploaderSig := uploader.Sign(u.Info.Fingerprint())
				u.Info.Sigs = []string{uploaderSig}

				mustStatus(t, "HEAD nar before upload", tc.head(t, u.NarPath), http.StatusNotFound)
				mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File, withHeader("Content-Type", "application/x-nix-nar")), http.StatusOK)
				if store == "as-uploaded" {
					r := tc.head(t, u.NarPath)
					mustStatus(t, "HEAD nar", r, http.StatusOK)
					if cl := r.Header.Get("Content-Length"); cl != strconv.Itoa(len(u.File)) {
						t.Errorf("HEAD nar Content-Length = %q, want %d", cl, len(u.File))
					}
				}

				mustStatus(t, "HEAD narinfo before its upload", tc.head(t, u.NarInfoPath()), http.StatusNotFound)
				mustStatus(t, "PUT narinfo", tc.put(t, u.NarInfoPath(), u.Text(), withHeader("Content-Type", "text/x-nix-narinfo")), http.StatusOK)
				r := tc.head(t, u.NarInfoPath())
				mustStatus(t, "HEAD narinfo", r, http.StatusOK)
				if ct := r.Header.Get("Content-Type"); ct != "text/x-nix-narinfo" {
					t.Errorf("HEAD narinfo Content-Type = %q, want text/x-nix-narinfo", ct)
				}

				r = tc.get(t, u.NarInfoPath())
				mustStatus(t, "GET narinfo", r, http.StatusOK)
				if ct := r.Header.Get("Content-Type"); ct != "text/x-nix-narinfo" {
					t.Errorf("narinfo Content-Type = %q, want text/x-nix-narinfo", ct)
				}
				if cl := r.Header.Get("Content-Length"); cl != strconv.Itoa(len(r.Body)) {
					t.Errorf("narinfo Content-Length = %q for %d bytes", cl, len(r.Body))
				}
				ni := tc.parseServed(t, r.Body)
				checkSameNarInfo(t, ni, &u.Info)
				if !slices.Contains(ni.Sigs, uploaderSig) || !uploader.Public().Verify(ni.Fingerprint(), uploaderSig) {
					t.Errorf("the uploader's signature was dropped or no longer verifies; served Sigs: %q", ni.Sigs)
				}
				if store == "as-uploaded" && (ni.URL != u.Info.URL || ni.Compression != comp ||
					!ni.FileHash.Equal(u.Info.FileHash) || ni.FileSize != u.Info.FileSize) {
					t.Errorf("stored as uploaded, but served URL/Compression/FileHash/FileSize differ:\n%s", r.Body)
				}

				// HEAD of the served NAR, then the download a substituter does.
				hr := tc.head(t, "/"+ni.URL)
				mustStatus(t, "HEAD served nar", hr, http.StatusOK)
				if cl := hr.Header.Get("Content-Length"); cl != strconv.FormatUint(ni.FileSize, 10) {
					t.Errorf("HEAD served nar Content-Length = %q, want FileSize %d", cl, ni.FileSize)
				}
				got := tc.checkServedNar(t, ni, u.NAR)
				if store == "as-uploaded" && !bytes.Equal(got.Body, u.File) {
					t.Errorf("stored as uploaded, but GET nar returned %d bytes that differ from the %d uploaded", len(got.Body), len(u.File))
				}
			})
		}
	}
}

// TestUploaderSigUnderServerKeyNameIsReplaced: a Sig line that claims the server's key name is
// not kept; the served narinfo carries exactly one, valid, signature under that name.
func TestUploaderSigUnderServerKeyNameIsReplaced(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "forged", "zstd")
	forged := tc.Pub.Name + ":" + base64String(make([]byte, 64))
	u.Info.Sigs = []string{forged}
	u.store(t, tc)
	ni := tc.narinfoOf(t, u) // fails unless exactly one server signature, and it verifies
	if slices.Contains(ni.Sigs, forged) {
		t.Errorf("the forged signature is served: %q", ni.Sigs)
	}
}

// TestHeadOfRecompressedNarUploadIs200 shows the HEAD that `nix copy` sends before each NAR
// upload (to skip NARs the cache has) answering 404 for a NAR the server accepted and stores
// recompressed: nix uploads it again after an interrupted copy and in every parallel job, which
// for multi-GiB NARs is the whole cost of an upload. Uploads in nix's default compression (xz)
// are recompressed by the default store compression (zstd).
func TestHeadOfRecompressedNarUploadIs200(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "recompressed-head", "xz")
	mustStatus(t, "PUT xz nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
	mustStatus(t, "HEAD of the name just uploaded", tc.head(t, u.NarPath), http.StatusOK)
}

// checkSameNarInfo compares what the signature covers and what the client reads besides the
// file fields (URL, Compression, FileHash and FileSize may change when the server recompresses).
func checkSameNarInfo(t *testing.T, got, want *narinfo.NarInfo) {
	t.Helper()
	if got.Fingerprint() != want.Fingerprint() || got.Deriver != want.Deriver || got.System != want.System || got.CA != want.CA {
		t.Errorf("served narinfo differs from the uploaded one:\n got: %s\nwant: %s", got.Bytes(), want.Bytes())
	}
}

// TestNarRangeResumeKeepsETag replays a resumed download: nix (and Lix, which aborts when the
// ETag changes) asks for the rest of the NAR with Range after a broken transfer.
func TestNarRangeResumeKeepsETag(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "resume", "xz")
	u.store(t, tc)
	ni := tc.narinfoOf(t, u)
	full := tc.checkServedNar(t, ni, u.NAR)
	etag := full.Header.Get("ETag")
	narPath, file := "/"+ni.URL, full.Body
	size := len(file)
	if size < 64 {
		t.Fatalf("test NAR file too small (%d bytes)", size)
	}
	n := size / 3
	tests := []struct {
		name, rng string
		status    int
		want      []byte
	}{
		{"resume from offset", fmt.Sprintf("bytes=%d-", n), http.StatusPartialContent, file[n:]},
		{"first ten bytes", "bytes=0-9", http.StatusPartialContent, file[:10]},
		{"last byte", fmt.Sprintf("bytes=%d-", size-1), http.StatusPartialContent, file[size-1:]},
		{"suffix", "bytes=-5", http.StatusPartialContent, file[size-5:]},
		{"start at end", fmt.Sprintf("bytes=%d-", size), http.StatusRequestedRangeNotSatisfiable, nil},
		{"beyond end", fmt.Sprintf("bytes=%d-%d", size+10, size+20), http.StatusRequestedRangeNotSatisfiable, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tc.get(t, narPath, withHeader("Range", tt.rng))
			mustStatus(t, "GET nar Range: "+tt.rng, r, tt.status)
			if tt.status != http.StatusPartialContent {
				return
			}
			if !bytes.Equal(r.Body, tt.want) {
				t.Errorf("Range %s: got %d bytes, want %d (exactly the requested ones)", tt.rng, len(r.Body), len(tt.want))
			}
			if cl := r.Header.Get("Content-Length"); cl != strconv.Itoa(len(tt.want)) {
				t.Errorf("Range %s: Content-Length %q, want %d", tt.rng, cl, len(tt.want))
			}
			if got := r.Header.Get("ETag"); got != etag {
				t.Errorf("Range %s: ETag %q, full GET had %q", tt.rng, got, etag)
			}
			if _, ok := r.Header["Content-Encoding"]; ok {
				t.Errorf("Range %s: response has a Content-Encoding", tt.rng)
			}
		})
	}
	t.Run("If-Range with the ETag", func(t *testing.T) {
		r := tc.get(t, narPath, withHeader("Range", fmt.Sprintf("bytes=%d-", n)), withHeader("If-Range", etag))
		mustStatus(t, "GET nar with If-Range", r, http.StatusPartialContent)
		if !bytes.Equal(r.Body, file[n:]) {
			t.Error("If-Range resume returned the wrong bytes")
		}
	})
}

// encodings a Nix ≥ 2.32 client may put on narinfo, .ls and log PUTs (bzip2 needs the tool).
var putEncodings = []string{"br", "zstd", "gzip", "xz", "bzip2"}

// TestPutContentEncodingIsDecoded replays narinfo-compression, ls-compression and log-compression.
func TestPutContentEncodingIsDecoded(t *testing.T) {
	tc := newTestCache(t)
	for _, enc := range putEncodings {
		t.Run(enc, func(t *testing.T) {
			u := newUpload(t, "encoded-"+enc, "zstd")
			mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)

			// narinfo
			body := compress(t, enc, u.Text())
			r := tc.put(t, u.NarInfoPath(), body, withHeader("Content-Encoding", enc), withHeader("Content-Type", "text/x-nix-narinfo"))
			mustStatus(t, "PUT narinfo with Content-Encoding "+enc, r, http.StatusOK)
			r = tc.get(t, u.NarInfoPath())
			mustStatus(t, "GET narinfo", r, http.StatusOK)
			checkSameNarInfo(t, tc.parseServed(t, r.Body), &u.Info)

			// listing
			listing, err := nar.Listing(bytes.NewReader(u.NAR))
			if err != nil {
				t.Fatal(err)
			}
			lsPath := "/" + u.Hash + ".ls"
			r = tc.put(t, lsPath, compress(t, enc, listing), withHeader("Content-Encoding", enc), withHeader("Content-Type", "application/json"))
			mustStatus(t, "PUT .ls with Content-Encoding "+enc, r, http.StatusOK)
			r = tc.get(t, lsPath)
			mustStatus(t, "GET .ls", r, http.StatusOK)
			if !bytes.Equal(r.Body, listing) {
				t.Errorf("GET .ls = %q, want the decoded listing %q", r.Body, listing)
			}
			if ce := r.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("GET .ls without Accept-Encoding has Content-Encoding %q", ce)
			}

			// build log
			logPath := "/log/" + u.Info.Deriver
			logText := []byte(strings.Repeat("building '/nix/store/"+u.Info.Deriver+"'...\n", 50))
			r = tc.put(t, logPath, compress(t, enc, logText), withHeader("Content-Encoding", enc), withHeader("Content-Type", "text/plain"))
			mustStatus(t, "PUT log with Content-Encoding "+enc, r, http.StatusOK)
			r = tc.get(t, logPath)
			mustStatus(t, "GET log", r, http.StatusOK)
			if !bytes.Equal(r.Body, logText) {
				t.Errorf("GET log returned %d bytes, want the %d decoded ones", len(r.Body), len(logText))
			}
		})
	}
}

func TestPutContentEncodingRefusals(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "bad-encoding", "xz")
	mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
	garbage := []byte("this is not compressed at all, whatever the header claims\n")
	tests := []struct {
		name, path, encoding string
		body                 []byte
	}{
		{"unknown encoding on narinfo", u.NarInfoPath(), "snappy", u.Text()},
		{"unknown encoding on log", "/log/" + u.Info.Deriver, "compress", []byte("log\n")},
		{"garbage claiming gzip", u.NarInfoPath(), "gzip", garbage},
		{"garbage claiming zstd", u.NarInfoPath(), "zstd", garbage},
		{"garbage claiming br", u.NarInfoPath(), "br", garbage},
		{"garbage claiming xz", u.NarInfoPath(), "xz", garbage},
		{"garbage claiming bzip2", u.NarInfoPath(), "bzip2", garbage},
		{"garbage claiming gzip on .ls", "/" + u.Hash + ".ls", "gzip", garbage},
		{"truncated gzip", u.NarInfoPath(), "gzip", compressTruncated(t, "gzip", u.Text())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tc.put(t, tt.path, tt.body, withHeader("Content-Encoding", tt.encoding))
			mustStatus(t, "PUT "+tt.path, r, http.StatusBadRequest)
			if !bytes.Contains(r.Body, []byte("Content-Encoding")) && !bytes.Contains(r.Body, []byte("body")) {
				t.Errorf("refusal names neither Content-Encoding nor body: %s", r)
			}
			mustStatus(t, "GET "+tt.path+" after refusal", tc.get(t, tt.path), http.StatusNotFound)
		})
	}
}

func compressTruncated(t *testing.T, enc string, data []byte) []byte {
	c := compress(t, enc, data)
	return c[:len(c)/2]
}

// TestRealisationsUnderBothPaths replays content-addressed derivation uploads from Nix 2.8–2.34
// (/realisations) and ≥ 2.35 (/build-trace-v2), and debuginfo links.
func TestRealisationsUnderBothPaths(t *testing.T) {
	tc := newTestCache(t)
	drvHash := strings.Repeat("0123456789abcdef", 4)
	drv := storeHash("realisation") + "-foo.drv"
	realisation := fmt.Sprintf(`{"id":"sha256:%s!out","outPath":"%s-foo","signatures":[],"dependentRealisations":{}}`, drvHash, storeHash("out"))
	tests := []struct {
		name, path, missing string
		body                []byte
	}{
		{"realisations", "/realisations/sha256:" + drvHash + "!out.doi", "/realisations/sha256:" + strings.Repeat("f", 64) + "!out.doi", []byte(realisation)},
		{"realisations dev output", "/realisations/sha256:" + drvHash + "!dev.doi", "/realisations/sha256:" + drvHash + "!lib.doi", []byte(realisation)},
		{"build-trace-v2", "/build-trace-v2/" + drv + "/out.doi", "/build-trace-v2/" + drv + "/dev.doi",
			[]byte(`{"key":{"drvPath":"` + drv + `","outputName":"out"},"value":{"outPath":"` + storeHash("out") + `-foo","signatures":[]}}`)},
		{"debuginfo", "/debuginfo/" + strings.Repeat("0a1b2c3d4e", 4), "/debuginfo/" + strings.Repeat("f", 40),
			[]byte(`{"archive":"../nar/x.nar.xz","member":"lib/debug/.build-id/0a/1b.debug"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustStatus(t, "GET missing "+tt.missing, tc.get(t, tt.missing), http.StatusNotFound)
			mustStatus(t, "GET before PUT", tc.get(t, tt.path), http.StatusNotFound)
			r := tc.put(t, tt.path, []byte("not json {"), withHeader("Content-Type", "application/json"))
			mustStatus(t, "PUT non-JSON", r, http.StatusBadRequest)
			if !bytes.Contains(r.Body, []byte("JSON")) {
				t.Errorf("refusal does not say the body is not JSON: %s", r)
			}
			mustStatus(t, "GET after refused PUT", tc.get(t, tt.path), http.StatusNotFound)

			mustStatus(t, "PUT", tc.put(t, tt.path, tt.body, withHeader("Content-Type", "application/json")), http.StatusOK)
			r = tc.get(t, tt.path)
			mustStatus(t, "GET", r, http.StatusOK)
			if !bytes.Equal(r.Body, tt.body) {
				t.Errorf("GET returned %q, want %q", r.Body, tt.body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			mustStatus(t, "HEAD", tc.head(t, tt.path), http.StatusOK)
		})
	}
	t.Run("percent-encoded bang", func(t *testing.T) {
		// A client that escapes '!' must reach the same object.
		path := "/realisations/sha256:" + drvHash + "%21out.doi"
		r := tc.get(t, path)
		mustStatus(t, "GET "+path, r, http.StatusOK)
		if !bytes.Equal(r.Body, []byte(realisation)) {
			t.Errorf("GET %s returned %q", path, r.Body)
		}
	})
}

// TestSameNarInTwoCompressionsAndTwoPaths uploads one NAR twice, in xz and in zstd, and names it
// from two store paths' narinfos, one per uploaded URL: every upload succeeds, the NAR is stored
// once, and each narinfo is served pointing at a file that decompresses to it.
func TestSameNarInTwoCompressionsAndTwoPaths(t *testing.T) {
	for _, store := range []string{"as-uploaded", ""} {
		t.Run("store="+store, func(t *testing.T) {
			tc := newTestCacheWith(t, cache.Options{StoreCompression: store}, nil)
			narBytes := buildNAR(t, "shared")
			a := newUploadNAR(t, "shared-a", "xz", narBytes)
			b := newUploadNAR(t, "shared-b", "zstd", narBytes)
			mustStatus(t, "PUT xz nar", tc.put(t, a.NarPath, a.File), http.StatusOK)
			mustStatus(t, "PUT zstd nar", tc.put(t, b.NarPath, b.File), http.StatusOK)
			mustStatus(t, "PUT narinfo a", tc.put(t, a.NarInfoPath(), a.Text()), http.StatusOK)
			mustStatus(t, "PUT narinfo b", tc.put(t, b.NarInfoPath(), b.Text()), http.StatusOK)
			for _, u := range []*upload{a, b} {
				ni := tc.narinfoOf(t, u)
				checkSameNarInfo(t, ni, &u.Info)
				tc.checkServedNar(t, ni, narBytes)
			}
			var nars []string
			for _, f := range tc.files(t) {
				if strings.HasPrefix(f, "nar/") {
					nars = append(nars, f)
				}
			}
			if len(nars) != 1 {
				t.Errorf("one NAR uploaded twice is stored as %q, want once", nars)
			}
		})
	}
}

// TestConcurrentUploadsOfSamePathAllSucceed replays parallel CI jobs pushing the same path:
// every uploader must get 200, and exactly one narinfo is served.
func TestConcurrentUploadsOfSamePathAllSucceed(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "parallel", "zstd")
	const n = 8
	parallel := func(what, path string, body []byte) {
		t.Helper()
		var wg sync.WaitGroup
		results := make([]*response, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], errs[i] = tc.try(http.MethodPut, path, body)
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Errorf("%s #%d: %v", what, i, errs[i])
			} else if results[i].Status != http.StatusOK {
				t.Errorf("%s #%d: got %s, want 200", what, i, results[i])
			}
		}
	}
	parallel("PUT nar", u.NarPath, u.File)
	parallel("PUT narinfo", u.NarInfoPath(), u.Text())
	if t.Failed() {
		t.FailNow()
	}

	r := tc.get(t, u.NarInfoPath())
	mustStatus(t, "GET narinfo", r, http.StatusOK)
	first := r.Body
	ni := tc.parseServed(t, first)
	checkSameNarInfo(t, ni, &u.Info)
	tc.checkServedNar(t, ni, u.NAR)

	var narinfos, nars, temps []string
	for _, f := range tc.files(t) {
		switch {
		case strings.HasSuffix(f, ".narinfo"):
			narinfos = append(narinfos, f)
		case strings.HasPrefix(f, "nar/"):
			nars = append(nars, f)
		case isTemporary(f):
			temps = append(temps, f)
		}
	}
	if !slices.Equal(narinfos, []string{u.Hash + ".narinfo"}) {
		t.Errorf("backend holds narinfos %q, want exactly one", narinfos)
	}
	if !slices.Equal(nars, []string{ni.URL}) {
		t.Errorf("backend holds NARs %q, want exactly the served %s", nars, ni.URL)
	}
	if len(temps) != 0 {
		t.Errorf("temporary files left behind: %q", temps)
	}

	// A different narinfo for the same store path (another build of it) is accepted but the
	// first one stays.
	other := u.Info
	other.Deriver = storeHash("another-deriver") + "-parallel.drv"
	mustStatus(t, "PUT different narinfo", tc.put(t, u.NarInfoPath(), other.Bytes()), http.StatusOK)
	r = tc.get(t, u.NarInfoPath())
	mustStatus(t, "GET narinfo after a different one", r, http.StatusOK)
	if !bytes.Equal(r.Body, first) {
		t.Errorf("a later different narinfo replaced the first:\n got: %s\nwant: %s", r.Body, first)
	}
}

// TestConcurrentDifferentNarInfosOneWins races different narinfos for one store path: all
// uploaders get 200 and one complete, correctly signed narinfo is served.
func TestConcurrentDifferentNarInfosOneWins(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "race", "zstd")
	mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
	const n = 8
	var wg sync.WaitGroup
	derivers := make([]string, n)
	results := make([]*response, n)
	errs := make([]error, n)
	for i := range n {
		ni := u.Info
		ni.Deriver = storeHash(fmt.Sprint("deriver", i)) + "-race.drv"
		derivers[i] = ni.Deriver
		body := ni.Bytes()
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = tc.try(http.MethodPut, u.NarInfoPath(), body)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("PUT #%d: %v", i, errs[i])
		}
		if results[i].Status != http.StatusOK {
			t.Errorf("PUT #%d: got %s, want 200", i, results[i])
		}
	}
	r := tc.get(t, u.NarInfoPath())
	mustStatus(t, "GET narinfo", r, http.StatusOK)
	ni := tc.parseServed(t, r.Body)
	if !slices.Contains(derivers, ni.Deriver) {
		t.Errorf("served Deriver %q is none of the uploaded ones", ni.Deriver)
	}
}

// TestNarInfoNeedsItsReferences: a narinfo whose references are not served is refused with 400
// naming References (nix uploads references first, so only a broken or racing upload meets
// this), and accepted once they are.
func TestNarInfoNeedsItsReferences(t *testing.T) {
	tc := newTestCache(t)
	dep := newUpload(t, "needs-dep", "zstd")
	top := newUpload(t, "needs-top", "zstd")
	top.Info.References = append(top.Info.References, dep.Hash+"-needs-dep")
	mustStatus(t, "PUT top nar", tc.put(t, top.NarPath, top.File), http.StatusOK)
	resp := tc.put(t, top.NarInfoPath(), top.Text())
	mustStatus(t, "PUT top narinfo before its reference", resp, http.StatusBadRequest)
	if !strings.Contains(string(resp.Body), "References") || !strings.Contains(string(resp.Body), dep.Hash) {
		t.Errorf("400 body does not name References and the missing path: %q", resp.Body)
	}
	mustStatus(t, "GET top narinfo", tc.get(t, top.NarInfoPath()), http.StatusNotFound)
	dep.store(t, tc)
	mustStatus(t, "PUT top narinfo after its reference", tc.put(t, top.NarInfoPath(), top.Text()), http.StatusOK)
}

// TestHeadCarriesGetHeaders: HEAD answers carry the headers GET does, without the body, for
// narinfos (hit and miss) and NARs.
func TestHeadCarriesGetHeaders(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "head-parity", "zstd")
	u.store(t, tc)
	ni := tc.narinfoOf(t, u)
	for _, p := range []string{u.NarInfoPath(), "/" + ni.URL, "/" + strings.Repeat("1", 32) + ".narinfo"} {
		g, h := tc.get(t, p), tc.head(t, p)
		if g.Status != h.Status {
			t.Errorf("%s: GET %d, HEAD %d", p, g.Status, h.Status)
		}
		for _, k := range []string{"Content-Type", "Content-Length", "Cache-Control", "ETag"} {
			if g.Header.Get(k) != h.Header.Get(k) {
				t.Errorf("%s: %s differs: GET %q, HEAD %q", p, k, g.Header.Get(k), h.Header.Get(k))
			}
		}
		if len(h.Body) != 0 {
			t.Errorf("%s: HEAD has a body", p)
		}
	}
}

// TestGetUploadedNameOfRecompressedNar: the uploading nix caches the narinfo it sent, with the
// uploaded URL; a GET of that name with its token (nix sends its netrc credentials on downloads
// too) gets the NAR recompressed to the compression it names. Without a valid token the GET is
// refused at once (recompression is CPU-heavy and only the uploader needs that name); a HEAD,
// which nix sends before uploading, still answers.
func TestGetUploadedNameOfRecompressedNar(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "uploaded-name", "xz")
	u.store(t, tc)
	for _, anon := range []struct {
		name string
		opts []reqOpt
	}{{"no token", nil}, {"unknown token", []reqOpt{withBasicAuth("nix", "not-a-token")}}, {"unknown bearer", []reqOpt{withHeader("Authorization", "Bearer nope")}}} {
		start := time.Now()
		r := tc.get(t, u.NarPath, anon.opts...)
		mustStatus(t, "GET the uploaded name, "+anon.name, r, http.StatusUnauthorized)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: the refusal took %v", anon.name, d)
		}
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: a 401 without WWW-Authenticate", anon.name)
		}
	}
	mustStatus(t, "HEAD the uploaded name without a token", tc.head(t, u.NarPath), http.StatusOK)
	resp := tc.get(t, u.NarPath, withBasicAuth("nix", testToken))
	mustStatus(t, "GET the uploaded xz name of a NAR stored as zstd, with the token", resp, http.StatusOK)
	xr, err := xz.NewReader(bytes.NewReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(xr)
	if err != nil || !bytes.Equal(got, u.NAR) {
		t.Fatalf("the recompressed download does not decompress to the NAR: %v", err)
	}
}
