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
