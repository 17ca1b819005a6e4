package push

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cached-dev/cached/internal/nar"
)

// writeStorePath makes a regular file store path base ("<hash>-<name>") under root and returns
// its info, with the NAR hash and size of what was written.
func writeStorePath(t testing.TB, root, base, contents string, refs ...string) PathInfo {
	t.Helper()
	p := "/nix/store/" + base
	if err := os.MkdirAll(filepath.Dir(root+p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+p, []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n := &countWriter{}
	if err := nar.Dump(io.MultiWriter(h, n), root+p); err != nil {
		t.Fatal(err)
	}
	return PathInfo{Path: p, NarHash: "sha256-" + base64.StdEncoding.EncodeToString(h.Sum(nil)), NarSize: uint64(n.n), References: refs}
}
