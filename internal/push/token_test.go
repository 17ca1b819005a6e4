package push

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, file, url, want, err string
	}{
		{"plain token", write("plain", "  cached_abc\n"), "http://h:5000", "cached_abc", ""},
		{"netrc, host matched without port", write("netrc", "machine other password no\nmachine cache.lan login x password yes\n"),
			"https://cache.lan:8443/", "yes", ""},
		{"netrc, host case-insensitive", write("netrc2", "machine Cache.LAN password yes\n"), "http://cache.lan", "yes", ""},
		{"netrc default", write("netrc3", "machine other password no\ndefault password dflt\n"), "http://cache.lan", "dflt", ""},
		{"netrc without the host", write("netrc4", "machine other password no\n"), "http://cache.lan", "", `"machine cache.lan"`},
		{"netrc entry without password", write("netrc5", "machine cache.lan login x\n"), "http://cache.lan", "", "has no password"},
		{"bad netrc", write("netrc6", "machine cache.lan passwrd x\n"), "http://cache.lan", "", "unknown keyword"},
		{"empty", write("empty", "\n \n"), "http://h", "", "is empty"},
		{"two words", write("two", "a b\n"), "http://h", "", "more than one word"},
		{"missing", filepath.Join(dir, "nope"), "http://h", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadToken(tc.file, tc.url)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				if !strings.Contains(err.Error(), tc.file) {
					t.Errorf("error %q does not name the file %s", err, tc.file)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
