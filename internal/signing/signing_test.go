package signing

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	upstreamKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	// The fingerprint and signature of /nix/store/w9yy…-hello-2.10 as cache.nixos.org serves
	// them (shared/testdata/cache.nixos.org), written out by hand so this package's tests do
	// not depend on the narinfo package.
	upstreamFP = "1;/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10;" +
		"sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i;205968;" +
		"/nix/store/9df65igwjmf2wbw0gbrrgair6piqjgmi-glibc-2.31,/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10"
	upstreamSig = "cache.nixos.org-1:uP5KU8MCmyRnKGlN5oEv6xWJBI5EO/Pf5aFztZuLSz8BpCcZ1fdBnJkVXhBAlxkdm/CemsgQskhwvyd2yghTAg=="
)

func TestVerifyUpstream(t *testing.T) {
	pub, err := ParsePublicKey(upstreamKey)
	if err != nil {
		t.Fatal(err)
	}
	if pub.String() != upstreamKey {
		t.Errorf("String() = %q, want %q", pub.String(), upstreamKey)
	}
	if !pub.Verify(upstreamFP, upstreamSig) {
		t.Fatal("cache.nixos.org signature does not verify")
	}
	_, b64, _ := strings.Cut(upstreamSig, ":")
	for _, tc := range []struct{ name, fp, sig string }{
		{"other fingerprint", upstreamFP + "x", upstreamSig},
		{"other key name", upstreamFP, "cache.nixos.org-2:" + b64},
		{"no name", upstreamFP, b64},
		{"empty", upstreamFP, ""},
		{"bad base64", upstreamFP, "cache.nixos.org-1:!!" + b64[2:]},
		{"short signature", upstreamFP, "cache.nixos.org-1:" + b64[:40]},
		{"long signature", upstreamFP, "cache.nixos.org-1:" + base64.StdEncoding.EncodeToString(make([]byte, 65))},
		{"flipped byte", upstreamFP, "cache.nixos.org-1:" + flipB64(b64)},
	} {
		if pub.Verify(tc.fp, tc.sig) {
			t.Errorf("%s: Verify = true", tc.name)
		}
	}
	if (PublicKey{Name: "cache.nixos.org-1"}).Verify(upstreamFP, upstreamSig) {
		t.Error("a key without key bytes verifies")
	}
}

func flipB64(s string) string {
	raw, _ := base64.StdEncoding.DecodeString(s)
	raw[10] ^= 1
	return base64.StdEncoding.EncodeToString(raw)
}

func TestGenerateSignVerify(t *testing.T) {
	k, err := Generate("cache.example.org-1")
	if err != nil {
		t.Fatal(err)
	}
	sig := k.Sign("fingerprint")
	if !strings.HasPrefix(sig, "cache.example.org-1:") {
		t.Errorf("Sign() = %q lacks the key name", sig)
	}
	if sig != k.Sign("fingerprint") {
		t.Error("Sign is not deterministic")
	}
	if !k.Public().Verify("fingerprint", sig) {
		t.Error("own signature does not verify")
	}
	other, _ := Generate("cache.example.org-1")
	if other.Public().Verify("fingerprint", sig) {
		t.Error("signature verifies with another key of the same name")
	}

	// String and Parse round-trip.
	k2, err := ParseSecretKey(k.String())
	if err != nil || k2.Name != k.Name || !k2.Key.Equal(k.Key) {
		t.Fatalf("ParseSecretKey(String()) = %#v, %v", k2, err)
	}
	p2, err := ParsePublicKey(k.Public().String())
	if err != nil || !p2.Key.Equal(k.Public().Key) {
		t.Fatalf("ParsePublicKey(String()) = %v, %v", p2, err)
	}
	// Logging a whole key must not print the secret.
	secret := base64.StdEncoding.EncodeToString(k.Key)
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("key", "k", k)
	if s := buf.String() + fmt.Sprintf("%#v", k); strings.Contains(s, secret) || !strings.Contains(s, k.Name) {
		t.Errorf("secret in log or %%#v output: %s", s)
	}
	// Surrounding whitespace (a key file's trailing newline) is fine.
	if _, err := ParseSecretKey("\n " + k.String() + "\n"); err != nil {
		t.Errorf("trailing newline: %v", err)
	}
}

func TestGenerateRejectsNames(t *testing.T) {
	for _, name := range []string{"", "a:b", "a b", "a\tb", "a\n", "\u00a0x", "x\x00"} {
		if _, err := Generate(name); err == nil {
			t.Errorf("Generate(%q) succeeded", name)
		}
	}
}

func TestParseKeyRejects(t *testing.T) {
	k, _ := Generate("k-1")
	secret := base64.StdEncoding.EncodeToString(k.Key)
	public := base64.StdEncoding.EncodeToString(k.Public().Key)
	inconsistent := append(ed25519.PrivateKey(nil), k.Key...)
	inconsistent[40] ^= 1

	secrets := []string{
		"",
		secret,                   // no name
		":" + secret,             // empty name
		"k 1:" + secret,          // whitespace in name
		"k-1:" + secret[:20],     // too short
		"k-1:" + public,          // a public key
		"k-1:" + secret + "AAAA", // too long
		"k-1:" + secret[:10] + "!" + secret[11:],
		"k-1:" + base64.StdEncoding.EncodeToString(inconsistent), // public half is not the seed's
	}
	for _, s := range secrets {
		_, err := ParseSecretKey(s)
		if err == nil {
			t.Errorf("ParseSecretKey(%.20q...) succeeded", s)
			continue
		}
		// Whatever went wrong, the key material must not end up in logs.
		for _, leak := range []string{secret[:16], secret[20:36], base64.StdEncoding.EncodeToString(inconsistent)[:16]} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("error %q contains key material", err)
			}
		}
	}
	for _, s := range []string{"", public, ":" + public, "k-1:" + secret, "k-1:" + public[:20], "k-1:" + public + "=="} {
		if _, err := ParsePublicKey(s); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", s)
		}
	}
}

func TestWriteKeyPair(t *testing.T) {
	dir := t.TempDir()
	k, _ := Generate("cache.example.org-1")
	sk, pk := filepath.Join(dir, "secret"), filepath.Join(dir, "public")
	if err := WriteKeyPair(sk, pk, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sk)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode %v, want 0600", st.Mode().Perm())
	}
	got, err := LoadSecretKeyFile(sk)
	if err != nil || got.String() != k.String() {
		t.Fatalf("LoadSecretKeyFile = %v, %v", got.Name, err)
	}
	pub, _ := os.ReadFile(pk)
	if string(pub) != k.Public().String() {
		t.Errorf("public file %q, want %q", pub, k.Public().String())
	}

	// Never overwrite: not the pair, not either half.
	other, _ := Generate("other-1")
	for _, paths := range [][2]string{{sk, pk}, {sk, filepath.Join(dir, "p2")}, {filepath.Join(dir, "s2"), pk}} {
		if err := WriteKeyPair(paths[0], paths[1], other); !errors.Is(err, fs.ErrExist) {
			t.Errorf("WriteKeyPair(%s, %s) over existing files: %v, want ErrExist", paths[0], paths[1], err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "s2")); err == nil {
		t.Error("a refused WriteKeyPair left a secret key file behind")
	}
	if got, _ := LoadSecretKeyFile(sk); got.Name != k.Name {
		t.Error("secret key file was overwritten")
	}

	if err := WriteKeyPair(filepath.Join(dir, "s3"), filepath.Join(dir, "p3"), SecretKey{Name: "x"}); err == nil {
		t.Error("WriteKeyPair wrote a key without key bytes")
	}
	// The public file's directory is missing: no half pair may remain.
	if err := WriteKeyPair(filepath.Join(dir, "s4"), filepath.Join(dir, "missing", "p4"), k); err == nil {
		t.Error("WriteKeyPair into a missing directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "s4")); err == nil {
		t.Error("a failed WriteKeyPair left the secret key file behind")
	}
}

func TestLoadSecretKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadSecretKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 1<<20), 0o600)
	if _, err := LoadSecretKeyFile(big); err == nil || !strings.Contains(err.Error(), big) {
		t.Errorf("huge file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("name:c2VjcmV0"), 0o600)
	if _, err := LoadSecretKeyFile(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: error %v should name the file", err)
	}
}
