package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"
)

func newTestCache(t testing.TB, opts Options) (*Cache, *disk.Backend) {
	t.Helper()
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newTestCacheOn(t, be, opts), be
}

// newTestCacheOn is a cache with a Badger index of its own on be.
func newTestCacheOn(t testing.TB, be backend.Backend, opts Options) *Cache {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ix, err := index.Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	key, _ := signing.Generate("test-1")
	c, err := New(context.Background(), be, ix, key, log, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testNar is a small NAR: a directory with an executable, a symlink and a compressible file.
func testNar(t *testing.T, seed string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := nar.NewWriter(&buf)
	big := strings.Repeat("compressible "+seed+" ", 20000)
	steps := []func() error{
		w.StartDirectory,
		func() error { return w.Entry("bin") },
		w.StartDirectory,
		func() error { return w.Entry("hi") },
		func() error { return w.File(true, 3, strings.NewReader("hi\n")) },
		w.EndDirectory,
		func() error { return w.Entry("data") },
		func() error { return w.File(false, int64(len(big)), strings.NewReader(big)) },
		func() error { return w.Entry("link") },
		func() error { return w.Symlink("data") },
		w.EndDirectory,
		w.Close,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func compress(t *testing.T, comp string, data []byte) []byte {
	t.Helper()
	return compressBench(comp, data)
}

func compressBench(comp string, data []byte) []byte {
	var buf bytes.Buffer
	switch comp {
	case "none":
		return data
	case "xz":
		w, _ := xz.NewWriter(&buf)
		w.Write(data)
		w.Close()
	case "zstd":
		w, _ := zstd.NewWriter(&buf)
		w.Write(data)
		w.Close()
	case "br":
		w := brotli.NewWriter(&buf)
		w.Write(data)
		w.Close()
	case "bzip2":
		// Go's standard library reads bzip2 but cannot write it; the bzip2 tool can.
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			panic("bzip2: " + err.Error())
		}
		return out
	}
	return buf.Bytes()
}

func narName(file []byte, comp string) string {
	sum := sha256.Sum256(file)
	h, _ := narinfo.ParseHash("sha256:" + nixbase32.EncodeToString(sum[:]))
	return NarObjectName(h, comp)
}

func narInfoFor(t *testing.T, storeHash string, narBytes, file []byte, url, comp string) []byte {
	t.Helper()
	ns := sha256.Sum256(narBytes)
	fs := sha256.Sum256(file)
	ni := narinfo.NarInfo{
		StorePath:   "/nix/store/" + storeHash + "-test",
		URL:         url,
		Compression: comp,
		NarHash:     narinfo.Hash{Algo: "sha256", Digest: ns[:]},
		NarSize:     uint64(len(narBytes)),
		FileHash:    narinfo.Hash{Algo: "sha256", Digest: fs[:]},
		FileSize:    uint64(len(file)),
	}
	return ni.Bytes()
}

// TestTranscodeOnIngest uploads a NAR in every compression nix offers under every storage
// policy, and checks what is stored and what the narinfo says.
func TestTranscodeOnIngest(t *testing.T) {
	ctx := context.Background()
	policies := map[string]func(uploaded string) string{
		"zstd":        func(u string) string { return "zstd" },
		"xz":          func(string) string { return "xz" },
		"as-uploaded": func(u string) string { return u },
	}
	for policy, want := range policies {
		for _, comp := range []string{"none", "xz", "zstd", "bzip2", "br"} {
			t.Run(comp+"-to-"+policy, func(t *testing.T) {
				c, be := newTestCache(t, Options{StoreCompression: policy})
				narBytes := testNar(t, comp+policy)
				file := compress(t, comp, narBytes)
				uploaded := narName(file, comp)
				if _, err := c.PutNar(ctx, uploaded, bytes.NewReader(file)); err != nil {
					t.Fatalf("PutNar: %v", err)
				}
				hash := "0123456789abcdfghijklmnpqrsvwxyz"
				stored, err := c.PutNarInfo(ctx, hash, narInfoFor(t, hash, narBytes, file, uploaded, comp))
				if err != nil || !stored {
					t.Fatalf("PutNarInfo: %v, stored=%v", err, stored)
				}
				text, err := c.NarInfo(context.Background(), hash)
				if err != nil {
					t.Fatal(err)
				}
				ni, err := narinfo.Parse(text)
				if err != nil {
					t.Fatal(err)
				}
				wantComp := want(comp)
				if ni.Compression != wantComp || !strings.HasSuffix(ni.URL, ".nar"+compressionExt[wantComp]) {
					t.Fatalf("narinfo says %s at %s, want %s", ni.Compression, ni.URL, wantComp)
				}
				if !c.PublicKey().Verify(ni.Fingerprint(), ni.Sigs[len(ni.Sigs)-1]) {
					t.Fatal("server signature does not verify")
				}
				// The object the narinfo names hashes to its FileHash and FileSize and
				// decompresses to the NAR.
				obj, err := be.Open(ctx, ni.URL)
				if err != nil {
					t.Fatalf("stored object %s: %v", ni.URL, err)
				}
				storedBytes, _ := io.ReadAll(obj)
				obj.Close()
				sum := sha256.Sum256(storedBytes)
				if !bytes.Equal(sum[:], ni.FileHash.Digest) || uint64(len(storedBytes)) != ni.FileSize {
					t.Fatal("FileHash/FileSize do not describe the stored object")
				}
				dec, err := decompressor(wantComp, bytes.NewReader(storedBytes))
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(dec)
				if err != nil || !bytes.Equal(got, narBytes) {
					t.Fatalf("stored object does not decompress to the NAR: %v", err)
				}
				// Nothing is left in staging.
				be.List(ctx, StagingPrefix, func(fi backend.FileInfo) error {
					t.Errorf("left in staging: %s", fi.Name)
					return nil
				})
			})
		}
	}
}

// TestOneObjectPerNarHash: the same NAR pushed as xz by one job and as zstd and none by others
// is stored once, and each uploader's narinfo resolves to it.
func TestOneObjectPerNarHash(t *testing.T) {
	ctx := context.Background()
	c, be := newTestCache(t, Options{StoreCompression: "zstd"})
	narBytes := testNar(t, "dedup")
	hashes := []string{"0123456789abcdfghijklmnpqrsvwxy0", "0123456789abcdfghijklmnpqrsvwxy1", "0123456789abcdfghijklmnpqrsvwxy2"}
	urls := map[string]bool{}
	for i, comp := range []string{"xz", "zstd", "none"} {
		file := compress(t, comp, narBytes)
		uploaded := narName(file, comp)
		if _, err := c.PutNar(ctx, uploaded, bytes.NewReader(file)); err != nil {
			t.Fatalf("PutNar %s: %v", comp, err)
		}
		if _, err := c.PutNarInfo(ctx, hashes[i], narInfoFor(t, hashes[i], narBytes, file, uploaded, comp)); err != nil {
			t.Fatalf("PutNarInfo %s: %v", comp, err)
		}
		text, _ := c.NarInfo(context.Background(), hashes[i])
		ni, _ := narinfo.Parse(text)
		urls[ni.URL] = true
	}
	if len(urls) != 1 {
		t.Fatalf("narinfos point at %d objects, want 1: %v", len(urls), urls)
	}
	n := 0
	be.List(ctx, "nar/", func(backend.FileInfo) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d NAR objects stored, want 1", n)
	}
}

// TestNarInfoChecksAgainstUpload: a narinfo naming the uploaded (aliased) URL is checked against
// what was uploaded, field by field.
func TestNarInfoChecksAgainstUpload(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestCache(t, Options{StoreCompression: "zstd"})
	narBytes := testNar(t, "fields")
	file := compress(t, "xz", narBytes)
	uploaded := narName(file, "xz")
	if _, err := c.PutNar(ctx, uploaded, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	good := string(narInfoFor(t, hash, narBytes, file, uploaded, "xz"))
	ni, _ := narinfo.Parse([]byte(good))
	cases := map[string]func(n *narinfo.NarInfo){
		"NarSize":     func(n *narinfo.NarInfo) { n.NarSize++ },
		"NarHash":     func(n *narinfo.NarInfo) { n.NarHash.Digest = bytes.Repeat([]byte{1}, 32) },
		"FileSize":    func(n *narinfo.NarInfo) { n.FileSize++ },
		"FileHash":    func(n *narinfo.NarInfo) { n.FileHash.Digest = bytes.Repeat([]byte{2}, 32) },
		"Compression": func(n *narinfo.NarInfo) { n.Compression = "zstd" },
		"URL":         func(n *narinfo.NarInfo) { n.URL = "nar/" + strings.Repeat("0", 52) + ".nar.xz" },
	}
	for field, mutate := range cases {
		bad := *ni
		mutate(&bad)
		_, err := c.PutNarInfo(ctx, hash, bad.Bytes())
		var ie *InputError
		if !errors.As(err, &ie) || ie.Field != field {
			t.Errorf("%s: error %v, want an InputError on %s", field, err, field)
		}
	}
	if _, err := c.NarInfo(context.Background(), hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused narinfo became visible: %v", err)
	}
	if stored, err := c.PutNarInfo(ctx, hash, []byte(good)); err != nil || !stored {
		t.Fatalf("good narinfo: %v", err)
	}
}

// TestRecompressionsAreBounded: a NAR asked for under its uploaded name is recompressed on the
// fly, and only Recompressions of those run at once; the next waits for a slot (or gives up with
// its context), and a client that hangs up frees its slot.
func TestRecompressionsAreBounded(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestCache(t, Options{StoreCompression: "zstd", Recompressions: 1})
	narBytes := testNar(t, "bounded")
	file := compress(t, "xz", narBytes)
	uploaded := narName(file, "xz")
	if _, err := c.PutNar(ctx, uploaded, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	if _, err := c.PutNarInfo(ctx, hash, narInfoFor(t, hash, narBytes, file, uploaded, "xz")); err != nil {
		t.Fatal(err)
	}
	first, err := c.OpenUploaded(ctx, uploaded)
	if err != nil {
		t.Fatalf("OpenUploaded: %v", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if rc, err := c.OpenUploaded(waitCtx, uploaded); !errors.Is(err, context.DeadlineExceeded) {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("a second recompression with the only slot taken: %v, want to wait until its context ends", err)
	}
	first.Close() // the client hangs up without reading
	second, err := c.OpenUploaded(ctx, uploaded)
	if err != nil {
		t.Fatalf("OpenUploaded after the first hung up: %v", err)
	}
	defer second.Close()
	dec, err := xz.NewReader(second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(dec)
	if err != nil || !bytes.Equal(got, narBytes) {
		t.Fatalf("recompressed NAR: %d bytes, %v; want the %d-byte NAR", len(got), err, len(narBytes))
	}
	if _, err := New(ctx, c.backend, c.index, c.keys.keys[0], c.log, Options{Recompressions: -1}); err == nil || !strings.Contains(err.Error(), "-1") {
		t.Fatalf("Recompressions -1: %v, want an error naming it", err)
	}
}
