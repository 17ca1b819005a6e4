package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

// FuzzCheck feeds check, which reads what an upstream serves, arbitrary narinfos: it never
// panics, and what it accepts parses, is for the hash asked, names its NAR relative to the
// upstream, and carries a signature by a trusted key.
func FuzzCheck(f *testing.F) {
	const nixosKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	pk, err := signing.ParsePublicKey(nixosKey)
	if err != nil {
		f.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join("..", "..", "..", "shared", "testdata", "cache.nixos.org", "*.narinfo"))
	for _, name := range names {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(strings.TrimSuffix(filepath.Base(name), ".narinfo"), b)
		}
	}
	f.Add("w9yy7v61ipb5rx6i35zq1mvc2iqfmps1", []byte("StorePath: /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10\nURL: http://x/nar/a.nar\nNarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\nNarSize: 1\n"))
	p := &Puller{keys: []signing.PublicKey{pk}}
	f.Fuzz(func(t *testing.T, hash string, body []byte) {
		ni, err := p.check(hash, body)
		if err != nil {
			return
		}
		if _, perr := narinfo.Parse(body); perr != nil {
			t.Fatalf("accepted a narinfo that does not parse: %v", perr)
		}
		if ni.HashPart() != hash {
			t.Fatalf("accepted %s for hash %q", ni.StorePath, hash)
		}
		if strings.Contains(ni.URL, "://") || strings.HasPrefix(ni.URL, "/") {
			t.Fatalf("accepted URL %q", ni.URL)
		}
		ok := false
		for _, s := range ni.Sigs {
			ok = ok || pk.Verify(ni.Fingerprint(), s)
		}
		if !ok {
			t.Fatalf("accepted a narinfo no trusted key signed")
		}
	})
}
