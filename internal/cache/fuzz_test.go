package cache

import (
	"strings"
	"testing"
)

// FuzzParseNarName: NAR object names from URLs never panic the parser, and an accepted name is
// a safe object name that formats back to itself.
func FuzzParseNarName(f *testing.F) {
	f.Add("nar/" + strings.Repeat("0", 52) + ".nar.xz")
	f.Add("nar/" + strings.Repeat("1", 52) + ".nar")
	f.Add("nar/../../etc/passwd")
	f.Add("nar/" + strings.Repeat("e", 52) + ".nar.zst")
	f.Add("nar/x.nar.gz")
	f.Fuzz(func(t *testing.T, s string) {
		nn, err := ParseNarName(s)
		if err != nil {
			return
		}
		if nn.Name != s || strings.Contains(s, "..") || strings.Count(s, "/") != 1 {
			t.Fatalf("accepted unsafe or altered name %q -> %+v", s, nn)
		}
	})
}

// FuzzParseStoreNarName: nix-serve's and harmonia's NAR URLs never panic the parsers, and what
// they accept is a well-formed store hash and an empty or well-formed NarHash; ParseNarName never
// accepts a nix-serve name, so that no URL means two things.
func FuzzParseStoreNarName(f *testing.F) {
	h := strings.Repeat("1", 32)
	f.Add("nar/"+h+"-"+strings.Repeat("0", 52)+".nar", h)
	f.Add("nar/"+h+".nar", "")
	f.Add("nar/"+strings.Repeat("0", 52)+".nar", h)
	f.Add("nar/"+h+"-.nar", "x")
	f.Add("nar/-"+strings.Repeat("0", 52)+".nar", strings.Repeat("e", 32))
	f.Fuzz(func(t *testing.T, name, query string) {
		if ref, err := ParseStoreNarName(name); err == nil {
			if !ValidStoreHash(ref.StoreHash) || ref.NarHash != "" && !validNix32SHA256(ref.NarHash) {
				t.Fatalf("%q accepted as %+v", name, ref)
			}
			if _, err := ParseNarName(name); err == nil {
				t.Fatalf("%q is both a nix-serve name and a NAR object name", name)
			}
		}
		if ref, err := ParseStoreNarQuery(name, query); err == nil {
			if !ValidStoreHash(ref.StoreHash) || !validNix32SHA256(ref.NarHash) || name != "nar/"+ref.NarHash+".nar" {
				t.Fatalf("%q ? hash=%q accepted as %+v", name, query, ref)
			}
		}
	})
}
