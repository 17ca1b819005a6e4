package narinfo_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

const (
	upstreamDir = "testdata/cache.nixos.org"
	upstreamKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	nixDir      = "testdata/nix-2.8"
)

type fixture struct {
	name string
	data []byte
	key  signing.PublicKey
}

// signedFixtures returns every narinfo nobody here wrote, with the key that signed it.
func signedFixtures(t *testing.T) []fixture {
	t.Helper()
	upstream, err := signing.ParsePublicKey(upstreamKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(nixDir, "cached-fixture-1.pub"))
	if err != nil {
		t.Fatal(err)
	}
	local, err := signing.ParsePublicKey(string(pub))
	if err != nil {
		t.Fatal(err)
	}
	var out []fixture
	for dir, key := range map[string]signing.PublicKey{upstreamDir: upstream, nixDir: local} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.narinfo"))
		if len(paths) == 0 {
			t.Fatalf("no narinfo fixtures in %s", dir)
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fixture{filepath.Base(p), data, key})
		}
	}
	return out
}

// verifies reports whether any of ni's signatures is key's valid signature of its fingerprint.
func verifies(ni *narinfo.NarInfo, key signing.PublicKey) bool {
	fp := ni.Fingerprint()
	for _, sig := range ni.Sigs {
		if key.Verify(fp, sig) {
			return true
		}
	}
	return false
}

func TestFixtureSignaturesVerify(t *testing.T) {
	for _, fx := range signedFixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			ni, err := narinfo.Parse(fx.data)
			if err != nil {
				t.Fatal(err)
			}
			if !verifies(ni, fx.key) {
				t.Fatalf("no signature by %s verifies fingerprint %q", fx.key.Name, ni.Fingerprint())
			}
			// Recompressing a NAR must keep signatures valid: these fields are not signed.
			ni.URL, ni.Compression, ni.FileHash, ni.FileSize = "nar/other.nar", "none", narinfo.Hash{}, 1
			if !verifies(ni, fx.key) {
				t.Error("signature covers URL, Compression, FileHash or FileSize")
			}
		})
	}
}

// A flipped character in any signed field must break every signature.
func TestTamperedFixturesFailVerification(t *testing.T) {
	flip := func(s string, i int) string {
		b := []byte(s)
		// Stay inside the field's alphabet where possible so the change is a plausible one.
		switch {
		case b[i] >= '0' && b[i] < '9', b[i] >= 'a' && b[i] < 'z':
			b[i]++
		default:
			b[i] ^= 1
		}
		return string(b)
	}
	for _, fx := range signedFixtures(t) {
		orig, err := narinfo.Parse(fx.data)
		if err != nil {
			t.Fatal(err)
		}
		type tamper struct {
			name string
			mod  func(ni *narinfo.NarInfo)
		}
		tampers := []tamper{
			{"StorePath hash", func(ni *narinfo.NarInfo) { ni.StorePath = flip(ni.StorePath, len("/nix/store/")) }},
			{"StorePath name", func(ni *narinfo.NarInfo) { ni.StorePath = flip(ni.StorePath, len(ni.StorePath)-1) }},
			{"NarHash first byte", func(ni *narinfo.NarInfo) { ni.NarHash.Digest[0] ^= 1 }},
			{"NarHash last bit", func(ni *narinfo.NarInfo) { ni.NarHash.Digest[31] ^= 0x80 }},
			{"NarSize +1", func(ni *narinfo.NarInfo) { ni.NarSize++ }},
			{"NarSize bit", func(ni *narinfo.NarInfo) { ni.NarSize ^= 1 << 10 }},
			{"References added", func(ni *narinfo.NarInfo) {
				ni.References = append(ni.References, "00000000000000000000000000000000-evil")
			}},
		}
		for i := range orig.References {
			tampers = append(tampers,
				tamper{"References dropped", func(ni *narinfo.NarInfo) {
					ni.References = append(ni.References[:i:i], ni.References[i+1:]...)
				}},
				tamper{"References hash", func(ni *narinfo.NarInfo) { ni.References[i] = flip(ni.References[i], 0) }},
				tamper{"References name", func(ni *narinfo.NarInfo) {
					ni.References[i] = flip(ni.References[i], len(ni.References[i])-1)
				}},
			)
		}
		for _, tc := range tampers {
			t.Run(fx.name+"/"+tc.name, func(t *testing.T) {
				ni, err := narinfo.Parse(fx.data) // a fresh copy: mods alias slices
				if err != nil {
					t.Fatal(err)
				}
				tc.mod(ni)
				if ni.Fingerprint() == orig.Fingerprint() {
					t.Fatal("tampering did not change the fingerprint")
				}
				if verifies(ni, fx.key) {
					t.Errorf("tampered narinfo still verifies: %q", ni.Fingerprint())
				}
			})
		}
		// The signature itself, flipped anywhere, must fail too.
		t.Run(fx.name+"/Sig", func(t *testing.T) {
			ni, _ := narinfo.Parse(fx.data)
			name, b64, _ := strings.Cut(ni.Sigs[0], ":")
			for i := range len(b64) - 3 { // "==" and the 4 padding bits before it are not signature bits
				ni.Sigs = []string{name + ":" + flip(b64, i)}
				if verifies(ni, fx.key) {
					t.Fatalf("signature with character %d flipped verifies", i)
				}
			}
		})
	}
}

// Signing a parsed narinfo with a fresh key and adding the Sig line keeps the file parseable,
// and the signature verifies after a round trip through Bytes.
func TestSignRoundTrip(t *testing.T) {
	k, err := signing.Generate("cached-test-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, fx := range signedFixtures(t) {
		ni, err := narinfo.Parse(fx.data)
		if err != nil {
			t.Fatal(err)
		}
		ni.Sigs = append(ni.Sigs, k.Sign(ni.Fingerprint()))
		ni2, err := narinfo.Parse(ni.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", fx.name, err)
		}
		if !verifies(ni2, k.Public()) || !verifies(ni2, fx.key) {
			t.Errorf("%s: signatures lost in the round trip", fx.name)
		}
	}
}
