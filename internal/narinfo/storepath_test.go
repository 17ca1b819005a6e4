package narinfo

import (
	"strings"
	"testing"
)

const testHash = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr"

func TestParseStorePath(t *testing.T) {
	dir, hash, name, err := ParseStorePath("/nix/store/" + testHash + "-curl-7.82.0-bin")
	if err != nil || dir != "/nix/store" || hash != testHash || name != "curl-7.82.0-bin" {
		t.Fatalf("got %q %q %q %v", dir, hash, name, err)
	}
	longName := strings.Repeat("a", 211)
	for _, ok := range []string{
		"/nix/store/" + testHash + "-" + longName,
		"/nix/store/" + testHash + "-a",
		"/nix/store/" + testHash + "-A-Z+z0-9._?=",
		"/nix/store/" + testHash + "-x.drv",
		"/other/store/" + testHash + "-x", // callers decide which store dirs they accept
	} {
		if _, _, _, err := ParseStorePath(ok); err != nil {
			t.Errorf("ParseStorePath(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"relative", testHash + "-x"},
		{"no dir", "/" + testHash + "-x"},
		{"trailing slash dir", "/nix/store//" + testHash + "-x"},
		{"dotdot dir", "/nix/../" + testHash + "-x"},
		{"hash with e", "/nix/store/e" + testHash[1:] + "-x"},
		{"hash with o", "/nix/store/o" + testHash[1:] + "-x"},
		{"hash with t", "/nix/store/t" + testHash[1:] + "-x"},
		{"hash with u", "/nix/store/u" + testHash[1:] + "-x"},
		{"hash upper", "/nix/store/" + strings.ToUpper(testHash) + "-x"},
		{"hash short", "/nix/store/" + testHash[1:] + "-x"},
		{"no dash", "/nix/store/" + testHash + "_x"},
		{"no name", "/nix/store/" + testHash + "-"},
		{"only hash", "/nix/store/" + testHash},
		{"name too long", "/nix/store/" + testHash + "-" + longName + "a"},
		{"name starts with dot", "/nix/store/" + testHash + "-.x"},
		{"name is dotdot", "/nix/store/" + testHash + "-.."},
		{"name with slash", "/nix/store/" + testHash + "-a/b"},
		{"name with space", "/nix/store/" + testHash + "-a b"},
		{"name with NUL", "/nix/store/" + testHash + "-a\x00"},
		{"name with unicode", "/nix/store/" + testHash + "-caf\u00e9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d, h, n, err := ParseStorePath(tc.in); err == nil {
				t.Errorf("ParseStorePath(%q) = %q %q %q, want error", tc.in, d, h, n)
			}
		})
	}
}

func TestParseBaseName(t *testing.T) {
	h, n, err := ParseBaseName(testHash + "-glibc-2.34-115")
	if err != nil || h != testHash || n != "glibc-2.34-115" {
		t.Fatalf("got %q %q %v", h, n, err)
	}
	for _, bad := range []string{"", testHash, "/nix/store/" + testHash + "-x", testHash + "-a/b", "unknown-deriver"} {
		if _, _, err := ParseBaseName(bad); err == nil {
			t.Errorf("ParseBaseName(%q) succeeded", bad)
		}
	}
}

func TestValidHashPart(t *testing.T) {
	for s, want := range map[string]bool{
		testHash:                           true,
		"00000000000000000000000000000000": true,
		"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz": true,
		"":                                 false,
		testHash[1:]:                       false,
		testHash + "0":                     false,
		"e" + testHash[1:]:                 false,
		"../" + testHash[3:]:               false,
		"%2e" + testHash[3:]:               false,
	} {
		if got := ValidHashPart(s); got != want {
			t.Errorf("ValidHashPart(%q) = %v, want %v", s, got, want)
		}
	}
}
