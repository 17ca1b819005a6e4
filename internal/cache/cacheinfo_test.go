package cache

import (
	"context"
	"io"
	"testing"

	"github.com/cached-dev/cached/internal/backend/disk"
)

// TestBackendCacheInfoPriority: the nix-cache-info stored in the backend (which plain nix reads
// when it reads the bucket directly) announces the server's priority, as the HTTP one does, and
// is rewritten when the priority changes; a tool that sets none (reindex) leaves it alone.
func TestBackendCacheInfoPriority(t *testing.T) {
	ctx := context.Background()
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stored := func() string {
		t.Helper()
		obj, err := be.Open(ctx, "nix-cache-info")
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		b, _ := io.ReadAll(obj)
		return string(b)
	}
	for _, step := range []struct {
		priority int
		want     string
	}{
		{0, CacheInfo(40)}, // a new backend, no priority given: the default
		{33, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 33\n"},
		{0, CacheInfo(33)}, // reindex, resign: leave it
		{20, CacheInfo(20)},
	} {
		newTestCacheOn(t, be, Options{Priority: step.priority})
		if got := stored(); got != step.want {
			t.Errorf("after New with priority %d: backend's nix-cache-info %q, want %q", step.priority, got, step.want)
		}
	}
}

// TestDependentsFirst: every path comes before the paths it refers to; self-references are
// ignored; paths not reachable from the roots through referrers are left out.
func TestDependentsFirst(t *testing.T) {
	// d refers to b and c, which refer to a; e refers to itself and to a; x refers to nothing.
	referrers := map[string][]string{"a": {"b", "c", "e"}, "b": {"d"}, "c": {"d"}, "e": {"e"}}
	order, err := DependentsFirst([]string{"a"}, func(h string) ([]string, error) { return referrers[h], nil })
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, h := range order {
		pos[h] = i
	}
	if len(order) != 5 {
		t.Fatalf("order %v: want a, b, c, d, e once each", order)
	}
	for h, rs := range referrers {
		for _, r := range rs {
			if r != h && pos[r] > pos[h] {
				t.Errorf("order %v: %s refers to %s but comes after it", order, r, h)
			}
		}
	}
}
