package push

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseNetrc(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []NetrcEntry
		err      string
	}{
		{"one line", "machine cache.example login u password p\n",
			[]NetrcEntry{{"cache.example", "u", "p"}}, ""},
		{"several lines and entries", "machine a\n  login la\n  password pa\n\nmachine b password pb\ndefault login d password pd",
			[]NetrcEntry{{"a", "la", "pa"}, {"b", "", "pb"}, {"", "d", "pd"}}, ""},
		{"comments and account", "# for CI\nmachine a account x password p # trailing\n",
			[]NetrcEntry{{"a", "", "p"}}, ""},
		{"quoted password", `machine a password "p w\"d"`,
			[]NetrcEntry{{"a", "", `p w"d`}}, ""},
		{"macdef skipped", "macdef init\ncd /pub\nls\n\nmachine a password p\n",
			[]NetrcEntry{{"a", "", "p"}}, ""},
		{"empty", "", nil, ""},
		{"password without machine", "password p", nil, "before any machine"},
		{"keyword without value", "machine a password", nil, `"password" at the end`},
		{"unknown keyword", "machine a pasword p", nil, `unknown keyword "pasword"`},
		{"unterminated quote", `machine a password "p`, nil, "unterminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseNetrc(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("entry %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

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

// FuzzParseNetrc: any input parses or fails without panicking, and a parsed file's entries
// survive being written back out and parsed again.
func FuzzParseNetrc(f *testing.F) {
	for _, s := range []string{
		"machine a login b password c\n", "default password x", "macdef m\nx\n\nmachine a password b",
		`machine a password "q\"x\\"`, "# c\nmachine a account z password p", "password", `"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := ParseNetrc(in)
		if err != nil {
			return
		}
		var b strings.Builder
		q := func(s string) string {
			r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
			return `"` + r.Replace(s) + `"`
		}
		for _, e := range entries {
			if e.Machine == "" {
				b.WriteString("default")
			} else {
				b.WriteString("machine " + q(e.Machine))
			}
			b.WriteString(" login " + q(e.Login) + " password " + q(e.Password) + "\n")
		}
		again, err := ParseNetrc(b.String())
		if err != nil {
			t.Fatalf("re-parsing %q: %v", b.String(), err)
		}
		if len(again) != len(entries) {
			t.Fatalf("%d entries became %d", len(entries), len(again))
		}
		for i := range again {
			if again[i] != entries[i] {
				t.Fatalf("entry %d: %+v became %+v", i, entries[i], again[i])
			}
		}
	})
}
