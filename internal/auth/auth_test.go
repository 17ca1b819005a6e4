package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/index"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	ix, err := index.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return NewStore(ix)
}

func TestCreateCheckRevoke(t *testing.T) {
	s := newStore(t)
	secret, tok, err := s.Create("ci", ScopeWrite)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Check(secret); got != ScopeWrite {
		t.Fatalf("Check = %v, want write", got)
	}
	if got, _ := s.Check(secret + "x"); got != ScopeNone {
		t.Fatalf("a wrong token has scope %v", got)
	}
	list, _ := s.List()
	if len(list) != 1 || list[0].ID != tok.ID || list[0].Name != "ci" || list[0].Scope != "write" {
		t.Fatalf("List = %+v", list)
	}
	for _, l := range list {
		if strings.Contains(l.ID+l.Name, secret) {
			t.Fatal("List leaks the secret")
		}
	}
	if _, err := s.Revoke(tok.ID[:6]); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Check(secret); got != ScopeNone {
		t.Fatalf("revoked token still has scope %v", got)
	}
	if _, err := s.Revoke(tok.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
}

func TestFixedTokensAndScopes(t *testing.T) {
	s := NewStore(nil)
	s.AddFixed("upload-token", ScopeWrite)
	s.AddFixed("  admin-token \n", ScopeAdmin)
	s.AddFixed("", ScopeAdmin) // ignored: an empty token must never match
	for tok, want := range map[string]Scope{"upload-token": ScopeWrite, "admin-token": ScopeAdmin, "": ScopeNone, "upload": ScopeNone} {
		if got, _ := s.Check(tok); got != want {
			t.Errorf("Check(%q) = %v, want %v", tok, got, want)
		}
	}
	if !(ScopeAdmin > ScopeWrite && ScopeWrite > ScopeRead && ScopeRead > ScopeNone) {
		t.Error("scopes do not nest")
	}
	for _, bad := range []string{"", "root", "reader"} {
		if _, err := ParseScope(bad); err == nil {
			t.Errorf("ParseScope(%q) accepted", bad)
		}
	}
}

func TestRevokeNeedsUniquePrefix(t *testing.T) {
	s := newStore(t)
	if _, err := s.Revoke("abc"); err == nil {
		t.Error("a 3-digit id prefix was accepted")
	}
	if _, _, err := s.Create("x", ScopeNone); err == nil {
		t.Error("a token without scope was created")
	}
}

// TestExpiringToken: a token works until its expiry and then gets an error saying when it
// expired; list shows the expiry; an expiry in the past is refused at creation.
func TestExpiringToken(t *testing.T) {
	s := newStore(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return now }
	expires := now.Add(30 * 24 * time.Hour)
	secret, tok, err := s.CreateExpiring("ci", ScopeWrite, expires)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expires.Equal(expires) {
		t.Errorf("Expires = %v, want %v", tok.Expires, expires)
	}
	now = now.Add(time.Second) // List is oldest first
	forever, _, err := s.Create("laptop", ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Check(secret); got != ScopeWrite || err != nil {
		t.Fatalf("before expiry: Check = %v, %v", got, err)
	}
	now = expires.Add(-time.Second)
	if got, err := s.Check(secret); got != ScopeWrite || err != nil {
		t.Fatalf("a second before expiry: Check = %v, %v", got, err)
	}
	now = expires
	got, err := s.Check(secret)
	var expired *ExpiredError
	if got != ScopeNone || !errors.As(err, &expired) {
		t.Fatalf("at expiry: Check = %v, %v; want none and an ExpiredError", got, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "expired at 2030-02-01T03:04:05Z") || !strings.Contains(msg, tok.ID) || strings.Contains(msg, secret) {
		t.Errorf("expiry error %q: want the id and the time, never the secret", msg)
	}
	if got, err := s.Check(forever); got != ScopeRead || err != nil {
		t.Errorf("a token without expiry: Check = %v, %v", got, err)
	}
	list, _ := s.List()
	if len(list) != 2 || !list[0].Expires.Equal(expires) || !list[1].Expires.IsZero() || !list[0].Expired(now) || list[1].Expired(now) {
		t.Errorf("List = %+v", list)
	}
	for _, past := range []time.Time{now, now.Add(-time.Hour)} {
		if _, _, err := s.CreateExpiring("late", ScopeRead, past); err == nil {
			t.Errorf("a token expiring at %v (now %v) was created", past, now)
		}
	}
}

// TestFixedDigests: token files may hold "sha256:<hex>" instead of the token; the digest then
// matches the token (never the digest text itself), and malformed digests never match.
func TestFixedDigests(t *testing.T) {
	const upload, admin = "upload-secret", "admin-secret"
	s := NewStore(nil)
	s.AddFixed(HashToken(upload), ScopeWrite)
	s.AddFixed("  "+strings.ToUpper(HashToken(admin)[len(DigestPrefix):])+"\n", ScopeRead) // a bare hex line is a plain token
	s.AddFixed(DigestPrefix+strings.ToUpper(HashToken(admin)[len(DigestPrefix):]), ScopeAdmin)
	s.AddFixed("sha256:abc", ScopeAdmin)
	s.AddFixed("sha256:"+strings.Repeat("zz", 32), ScopeAdmin)
	for tok, want := range map[string]Scope{
		upload:                  ScopeWrite,
		admin:                   ScopeAdmin,
		HashToken(upload):       ScopeNone, // the digest is not a password
		"sha256:abc":            ScopeNone,
		"abc":                   ScopeNone,
		upload + "\n":           ScopeNone,
		strings.ToUpper(upload): ScopeNone,
	} {
		if got, _ := s.Check(tok); got != want {
			t.Errorf("Check(%q) = %v, want %v", tok, got, want)
		}
	}
	if got := HashToken("abc"); got != "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashToken(abc) = %s, not what sha256sum prints", got)
	}
}

func TestParseFixedRejects(t *testing.T) {
	good := HashToken("x")
	for _, line := range []string{
		"", "  \n",
		"sha256:",
		"sha256:" + strings.Repeat("0", 63),
		"sha256:" + strings.Repeat("0", 65),
		"sha256:" + strings.Repeat("g", 64),
		good + " trailing",
		"sha256: " + good[len(DigestPrefix):],
	} {
		if _, err := ParseFixed(line); err == nil {
			t.Errorf("ParseFixed(%q) accepted", line)
		} else if len(line) > 20 && strings.Contains(err.Error(), line[7:]) {
			t.Errorf("error %q quotes the line", err)
		}
	}
	if d, err := ParseFixed(" " + good + "\n"); err != nil || DigestPrefix+hex.EncodeToString(d[:]) != good {
		t.Errorf("ParseFixed(%q) = %x, %v", good, d, err)
	}
}

// FuzzParseFixed: any line either is refused or yields the digest a presented token is checked
// against; a digest line round-trips through HashToken's format.
func FuzzParseFixed(f *testing.F) {
	f.Add(HashToken("token"))
	f.Add("plain-token")
	f.Add("sha256:")
	f.Add("sha256:" + strings.Repeat("Z", 64))
	f.Fuzz(func(t *testing.T, line string) {
		d, err := ParseFixed(line)
		if err != nil {
			return
		}
		trimmed := strings.TrimSpace(line)
		if hexDigest, ok := strings.CutPrefix(trimmed, DigestPrefix); ok {
			if !strings.EqualFold(hex.EncodeToString(d[:]), hexDigest) {
				t.Fatalf("digest %x from %q", d, line)
			}
			return
		}
		if d != sha256.Sum256([]byte(trimmed)) {
			t.Fatalf("plain token %q: digest is not its SHA-256", line)
		}
	})
}
