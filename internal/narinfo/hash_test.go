package narinfo

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"strings"
	"testing"
)

// Every form of the hash of the 6 bytes "cached", as printed by `nix hash file --type T
// --base16/--base32/--base64/--sri` (Nix 2.8), so the vectors do not come from our own encoder.
var nixHashVectors = []struct {
	algo   string
	digest []byte
	nix32  string
	forms  []string // base16, nix32, base64, SRI
}{
	{"md5", md5sum("cached"), "md5:4ha6124ha9k65a2r21adha1c8z", []string{
		"md5:1fb1a060534164a18a99494122825190",
		"md5:4ha6124ha9k65a2r21adha1c8z",
		"md5:H7GgYFNBZKGKmUlBIoJRkA==",
		"md5-H7GgYFNBZKGKmUlBIoJRkA==",
	}},
	{"sha1", sha1sum("cached"), "sha1:vxzmapf64bl04kvvgf4wzz233qy734qc", []string{
		"sha1:0c93713c1e43fccf897b7b4f02e822c65d557fdf",
		"sha1:vxzmapf64bl04kvvgf4wzz233qy734qc",
		"sha1:DJNxPB5D/M+Je3tPAugixl1Vf98=",
		"sha1-DJNxPB5D/M+Je3tPAugixl1Vf98=",
	}},
	{"sha256", sha256sum("cached"), "sha256:0vams1dpf2hixmnyvfnymy9x6ym5am2nk19462z86wxnf9702wrn", []string{
		"sha256:3673014e72b67383be302485694555a57ad393afdebaed6ded110a775bd0556d",
		"sha256:3673014E72B67383BE302485694555A57AD393AFDEBAED6DED110A775BD0556D", // Nix reads upper-case hex
		"sha256:0vams1dpf2hixmnyvfnymy9x6ym5am2nk19462z86wxnf9702wrn",
		"sha256:NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0=",
		"sha256-NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0=",
		"sha256-NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0", // SRI without padding, as Nix tolerates
	}},
	{"sha512", sha512sum("cached"), "sha512:1fainngawr2k3d6dk4xjzn90ng6fsrc1dn2q67hf9r1p0iv4n94987p64bzal47y0c2y3hdnifm6zgg8ir064xfih5x6fx93sdijgi3", []string{
		"sha512:233e199b1ea93bd30b8cae13037244ef7d535db40d0e2f18f08750f51731f7a04492253b821b7272f0182c6c0b2c6b679e05c97ed9c96ca68d293257cfdaa85c",
		"sha512:1fainngawr2k3d6dk4xjzn90ng6fsrc1dn2q67hf9r1p0iv4n94987p64bzal47y0c2y3hdnifm6zgg8ir064xfih5x6fx93sdijgi3",
		"sha512:Iz4Zmx6pO9MLjK4TA3JE731TXbQNDi8Y8IdQ9Rcx96BEkiU7ghtycvAYLGwLLGtnngXJftnJbKaNKTJXz9qoXA==",
		"sha512-Iz4Zmx6pO9MLjK4TA3JE731TXbQNDi8Y8IdQ9Rcx96BEkiU7ghtycvAYLGwLLGtnngXJftnJbKaNKTJXz9qoXA==",
	}},
}

func md5sum(s string) []byte    { h := md5.Sum([]byte(s)); return h[:] }
func sha1sum(s string) []byte   { h := sha1.Sum([]byte(s)); return h[:] }
func sha256sum(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
func sha512sum(s string) []byte { h := sha512.Sum512([]byte(s)); return h[:] }

func TestParseHashFormsAgree(t *testing.T) {
	for _, v := range nixHashVectors {
		want := Hash{Algo: v.algo, Digest: v.digest}
		for _, form := range v.forms {
			got, err := ParseHash(form)
			if err != nil {
				t.Errorf("ParseHash(%q): %v", form, err)
				continue
			}
			if !got.Equal(want) {
				t.Errorf("ParseHash(%q) = %x, want %x", form, got.Digest, want.Digest)
			}
		}
		// String writes the nix32 form, as Nix writes hashes in narinfos.
		if got := want.String(); got != v.nix32 {
			t.Errorf("String() = %q, want %q", got, v.nix32)
		}
	}
}

func TestParseHashRejects(t *testing.T) {
	const nix32 = "0vams1dpf2hixmnyvfnymy9x6ym5am2nk19462z86wxnf9702wrn"
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"no prefix", nix32},
		{"unknown algo", "sha384:" + nix32},
		{"algo case", "SHA256:" + nix32},
		{"empty algo", ":" + nix32},
		{"nix32 short", "sha256:" + nix32[1:]},
		{"nix32 long", "sha256:0" + nix32},
		{"nix32 with e", "sha256:e" + nix32[1:]},
		{"nix32 with o", "sha256:" + nix32[:10] + "o" + nix32[11:]},
		{"nix32 with t", "sha256:" + nix32[:51] + "t"},
		{"nix32 with u", "sha256:" + nix32[:20] + "u" + nix32[21:]},
		{"nix32 upper", "sha256:" + strings.ToUpper(nix32)},
		// 52 nix32 digits hold 260 bits: the top 4 must be zero.
		{"nix32 overflow", "sha256:z" + nix32[1:]},
		{"base16 bad digit", "sha256:g673014e72b67383be302485694555a57ad393afdebaed6ded110a775bd0556d"},
		{"base16 short", "sha256:3673014e72b67383be302485694555a57ad393afdebaed6ded110a775bd0556"},
		{"base64 bad char", "sha256:NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0!"},
		{"base64 url alphabet", "sha256:NnMBTnK2c4O-MCSFaUVVpXrTk6_euu1t7REKd1vQVW0="},
		{"base64 unpadded non-SRI", "sha256:NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0"},
		{"SRI wrong length", "sha256-DJNxPB5D/M+Je3tPAugixl1Vf98="},
		{"SRI in base16", "sha256-3673014e72b67383be302485694555a57ad393afdebaed6ded110a775bd0556d"},
		{"SRI with newline", "sha256-NnMBTnK2c4O+MCSFaUVVpXrT\nk6/euu1t7REKd1vQVW0="},
		{"sha1 length for sha256", "sha256:vxzmapf64bl04kvvgf4wzz233qy734qc"},
		{"sha256 length for sha1", "sha1:" + nix32},
		{"trailing space", "sha256:" + nix32 + " "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHash(tc.in)
			if err == nil {
				t.Fatalf("ParseHash(%q) = %v, want error", tc.in, h)
			}
			// Errors name the offending value (or its start, if long).
			if q := quote(tc.in); !strings.Contains(err.Error(), q) {
				t.Errorf("error %q does not contain %s", err, q)
			}
		})
	}
}

func TestHashZero(t *testing.T) {
	var h Hash
	if !h.IsZero() || h.String() != "" {
		t.Errorf("zero Hash: IsZero %v, String %q", h.IsZero(), h.String())
	}
	h, _ = ParseHash("md5:4ha6124ha9k65a2r21adha1c8z")
	if h.IsZero() {
		t.Error("parsed hash IsZero")
	}
	if h.Equal(Hash{Algo: "sha1", Digest: h.Digest}) {
		t.Error("Equal ignores the algorithm")
	}
}

func TestQuoteTruncates(t *testing.T) {
	long := strings.Repeat("x", 1000)
	if q := quote(long); len(q) > 110 {
		t.Errorf("quote of 1000 bytes is %d bytes", len(q))
	}
}
