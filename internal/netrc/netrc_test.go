package netrc

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Entry
		err      string
	}{
		{"one line", "machine cache.example login u password p\n",
			[]Entry{{"cache.example", "u", "p"}}, ""},
		{"several lines and entries", "machine a\n  login la\n  password pa\n\nmachine b password pb\ndefault login d password pd",
			[]Entry{{"a", "la", "pa"}, {"b", "", "pb"}, {"", "d", "pd"}}, ""},
		{"comments and account", "# for CI\nmachine a account x password p # trailing\n",
			[]Entry{{"a", "", "p"}}, ""},
		{"quoted password", `machine a password "p w\"d"`,
			[]Entry{{"a", "", `p w"d`}}, ""},
		{"macdef skipped", "macdef init\ncd /pub\nls\n\nmachine a password p\n",
			[]Entry{{"a", "", "p"}}, ""},
		{"empty", "", nil, ""},
		{"password without machine", "password p", nil, "before any machine"},
		{"keyword without value", "machine a password", nil, `"password" at the end`},
		{"unknown keyword", "machine a pasword p", nil, `unknown keyword "pasword"`},
		{"unterminated quote", `machine a password "p`, nil, "unterminated"},
		{"password with an unquoted space", "machine a password two words\n", nil, "one with spaces must be double-quoted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "words") {
					t.Fatalf("error %q quotes what may be part of a password", err)
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

// FuzzParse: any input parses or fails without panicking, and a parsed file's entries
// survive being written back out and parsed again.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"machine a login b password c\n", "default password x", "macdef m\nx\n\nmachine a password b",
		`machine a password "q\"x\\"`, "# c\nmachine a account z password p", "password", `"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := Parse(in)
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
		again, err := Parse(b.String())
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
