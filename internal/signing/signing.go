package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
)

// SecretKey is a named ed25519 signing key. Key is 64 bytes, seed then public key, the layout
// libsodium (and so Nix) uses.
type SecretKey struct {
	Name string
	Key  ed25519.PrivateKey
}

// PublicKey is a named ed25519 verification key, as listed in a client's trusted-public-keys.
type PublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

// Generate makes a new key pair called name. By convention the name is the cache's host name
// and a generation number, e.g. "cache.example.org-1", so that keys can be rotated.
func Generate(name string) (SecretKey, error) {
	if err := checkName(name); err != nil {
		return SecretKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SecretKey{}, fmt.Errorf("generate key %q: %w", name, err)
	}
	return SecretKey{Name: name, Key: priv}, nil
}

// checkName refuses names that could not be parsed back: the name ends at the first ':', and
// trusted-public-keys is a whitespace-separated list.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("key name is empty")
	case strings.ContainsRune(name, ':'):
		return fmt.Errorf("key name %q contains ':'", name)
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("key name %q contains whitespace or control characters", name)
	}
	return nil
}

// splitKey splits "<name>:<base64>", trimming surrounding whitespace as key files often end in
// a newline. It decodes the base64 part; its errors never quote that part.
func splitKey(s, what string) (name string, key []byte, err error) {
	name, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return "", nil, fmt.Errorf("%s is not <name>:<base64>", what)
	}
	if err := checkName(name); err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	key, err = base64.StdEncoding.DecodeString(b64)
	if err != nil || strings.ContainsAny(b64, "\r\n") {
		return "", nil, fmt.Errorf("%s %q: key is not valid base64", what, name)
	}
	return name, key, nil
}

// ParseSecretKey parses "<name>:<base64 of 64 bytes>", the contents of a secret key file.
func ParseSecretKey(s string) (SecretKey, error) {
	name, key, err := splitKey(s, "secret key")
	if err != nil {
		return SecretKey{}, err
	}
	if err := checkSecret(key); err != nil {
		return SecretKey{}, fmt.Errorf("secret key %q: %w", name, err)
	}
	return SecretKey{Name: name, Key: ed25519.PrivateKey(key)}, nil
}

// checkSecret checks the length and consistency of a 64-byte secret key. Signing uses the
// stored public half as is: if it does not belong to the seed, every signature would fail to
// verify, and only clients would notice.
func checkSecret(key []byte) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("%d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	derived := ed25519.NewKeyFromSeed(key[:ed25519.SeedSize])
	if !bytes.Equal(derived[ed25519.SeedSize:], key[ed25519.SeedSize:]) {
		return errors.New("public half does not match the seed")
	}
	return nil
}

// ParsePublicKey parses "<name>:<base64 of 32 bytes>", one entry of trusted-public-keys.
func ParsePublicKey(s string) (PublicKey, error) {
	name, key, err := splitKey(s, "public key")
	if err != nil {
		return PublicKey{}, err
	}
	if len(key) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("public key %q: %d bytes, want %d", name, len(key), ed25519.PublicKeySize)
	}
	return PublicKey{Name: name, Key: ed25519.PublicKey(key)}, nil
}

// String formats k as a secret key file holds it. It is the secret: never log it.
func (k SecretKey) String() string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key)
}

// LogValue keeps the secret out of slog output even when a whole SecretKey is logged; String
// must return the secret itself, so %v in fmt cannot be protected the same way.
func (k SecretKey) LogValue() slog.Value {
	return slog.StringValue(k.Name + ":<secret>")
}

// GoString keeps the secret out of %#v output, which test failures and debug prints use.
func (k SecretKey) GoString() string {
	return fmt.Sprintf("signing.SecretKey{Name: %q, Key: <secret>}", k.Name)
}

// Public returns the public half of k, under the same name.
func (k SecretKey) Public() PublicKey {
	return PublicKey{Name: k.Name, Key: k.Key.Public().(ed25519.PublicKey)}
}

// String formats p as trusted-public-keys lists it.
func (p PublicKey) String() string {
	return p.Name + ":" + base64.StdEncoding.EncodeToString(p.Key)
}

// Sign signs fingerprint and returns the value of a narinfo Sig line, "<name>:<base64>".
// ed25519 is deterministic: the same key and fingerprint give the same string Nix would.
func (k SecretKey) Sign(fingerprint string) string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(ed25519.Sign(k.Key, []byte(fingerprint)))
}

// Verify reports whether sig, a "<name>:<base64>" Sig value, is p's valid signature of
// fingerprint. A signature by another key name is false, not an error: narinfos carry
// signatures from many keys and the caller tries each.
func (p PublicKey) Verify(fingerprint, sig string) bool {
	name, b64, ok := strings.Cut(sig, ":")
	if !ok || name != p.Name || len(p.Key) != ed25519.PublicKeySize {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(p.Key, []byte(fingerprint), raw)
}
