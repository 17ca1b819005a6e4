package cache

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/cached-dev/cached/internal/narinfo"
)

// testPath is a store path uploaded by uploadPath.
type testPath struct {
	hash string
	url  string // the NAR object its narinfo names
}

// testHash returns the i-th of a set of valid store hashes.
func testHash(i int) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	return "0123456789abcdfghijklmnpqrsvwx" + string(alphabet[i/32]) + string(alphabet[i%32])
}

// uploadPath pushes a NAR and its narinfo (referencing refs) as nix copy would.
func uploadPath(t *testing.T, c *Cache, i int, refs ...testPath) testPath {
	t.Helper()
	ctx := context.Background()
	hash := testHash(i)
	narBytes := testNar(t, fmt.Sprintf("verify-%d", i))
	file := compress(t, "xz", narBytes)
	uploaded := narName(file, "xz")
	if _, err := c.PutNar(ctx, uploaded, bytes.NewReader(file)); err != nil {
		t.Fatalf("PutNar %d: %v", i, err)
	}
	ni, err := narinfo.Parse(narInfoFor(t, hash, narBytes, file, uploaded, "xz"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		ni.References = append(ni.References, r.hash+"-test")
	}
	if stored, err := c.PutNarInfo(ctx, hash, ni.Bytes()); err != nil || !stored {
		t.Fatalf("PutNarInfo %d: %v (stored %v)", i, err, stored)
	}
	text, err := c.NarInfo(context.Background(), hash)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := narinfo.Parse(text)
	return testPath{hash: hash, url: served.URL}
}
