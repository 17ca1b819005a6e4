package auth

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

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
