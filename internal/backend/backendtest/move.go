package backendtest

import (
	"context"
	"errors"
	"testing"

	"github.com/cached-dev/cached/internal/backend"
)

// RunMove checks the Mover contract for backends that implement it.
func RunMove(t *testing.T, b backend.Backend) {
	m, ok := b.(backend.Mover)
	if !ok {
		t.Fatalf("%T does not implement backend.Mover", b)
	}
	ctx := context.Background()
	save(t, b, "staging/m1", []byte("moved content"))
	save(t, b, "nar/target.nar", []byte("old"))
	if err := m.Move(ctx, "staging/m1", "nar/target.nar"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, b, "nar/target.nar"); string(got) != "moved content" {
		t.Fatalf("after Move: %q", got)
	}
	if _, err := b.Stat(ctx, "staging/m1"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("source still there after Move: %v", err)
	}
	if err := m.Move(ctx, "staging/missing", "nar/x.nar"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Move of a missing object: %v, want ErrNotExist", err)
	}
	if err := m.Move(ctx, "nar/target.nar", "../escape"); err == nil {
		t.Fatal("Move to a hostile name succeeded")
	}
	mustRemove(t, b, "nar/target.nar")
}
