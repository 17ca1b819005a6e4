package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"
)

// newTestCache is a cache on a real disk backend with a Badger index of its own.
func newTestCache(t *testing.T, opts cache.Options) (*cache.Cache, *index.Index, *disk.Backend) {
	t.Helper()
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ix, err := index.Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	key, _ := signing.Generate("test-1")
	c, err := cache.New(context.Background(), be, ix, key, log, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, ix, be
}

// testHash returns the i-th of a set of valid store hashes.
func testHash(i int) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	return "0123456789abcdfghijklmnpqrsvwx" + string(alphabet[i/32]) + string(alphabet[i%32])
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

// xzFile compresses data as nix copy does by default.
func xzFile(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// xzNarName is the name nix uploads an xz-compressed NAR file under.
func xzNarName(file []byte) string {
	sum := sha256.Sum256(file)
	h, _ := narinfo.ParseHash("sha256:" + nixbase32.EncodeToString(sum[:]))
	return cache.NarObjectName(h, "xz")
}

func narInfoFor(storeHash string, narBytes, file []byte, url string) []byte {
	ns := sha256.Sum256(narBytes)
	fs := sha256.Sum256(file)
	ni := narinfo.NarInfo{
		StorePath:   "/nix/store/" + storeHash + "-test",
		URL:         url,
		Compression: "xz",
		NarHash:     narinfo.Hash{Algo: "sha256", Digest: ns[:]},
		NarSize:     uint64(len(narBytes)),
		FileHash:    narinfo.Hash{Algo: "sha256", Digest: fs[:]},
		FileSize:    uint64(len(file)),
	}
	return ni.Bytes()
}

// testPath is a store path uploaded by uploadPath.
type testPath struct {
	hash string
	url  string // the NAR object its narinfo names
}

// uploadPath pushes a NAR and its narinfo (referencing refs) as nix copy would.
func uploadPath(t *testing.T, c *cache.Cache, i int, refs ...testPath) testPath {
	t.Helper()
	ctx := context.Background()
	hash := testHash(i)
	narBytes := testNar(t, fmt.Sprintf("verify-%d", i))
	file := xzFile(t, narBytes)
	uploaded := xzNarName(file)
	if _, err := c.PutNar(ctx, uploaded, bytes.NewReader(file)); err != nil {
		t.Fatalf("PutNar %d: %v", i, err)
	}
	ni, err := narinfo.Parse(narInfoFor(hash, narBytes, file, uploaded))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		ni.References = append(ni.References, r.hash+"-test")
	}
	if stored, err := c.PutNarInfo(ctx, hash, ni.Bytes()); err != nil || !stored {
		t.Fatalf("PutNarInfo %d: %v (stored %v)", i, err, stored)
	}
	text, err := c.NarInfo(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := narinfo.Parse(text)
	return testPath{hash: hash, url: served.URL}
}
