package disk

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
)

func TestConformance(t *testing.T) {
	b, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	backendtest.Run(t, b)
}

// TestTemps: Open leaves temporary files alone (a running server may be writing them); Temps
// lists them and RemoveTemp removes them, and nothing else.
func TestTemps(t *testing.T) {
	root := t.TempDir()
	tmp := filepath.Join(root, tmpDir)
	os.MkdirAll(tmp, 0o755)
	os.WriteFile(filepath.Join(tmp, "save-1"), []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(root, "keep"), []byte("x"), 0o644)
	b, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	temps, err := b.Temps(t.Context())
	if err != nil || len(temps) != 1 || temps[0].Name != ".tmp/save-1" || temps[0].Size != 7 {
		t.Fatalf("Temps = %+v, %v; want .tmp/save-1 of 7 bytes", temps, err)
	}
	for _, bad := range []string{"keep", ".tmp/", ".tmp/..", ".tmp/../keep", "../keep", ".tmp/a/../../keep"} {
		if err := b.RemoveTemp(t.Context(), bad); err == nil {
			t.Errorf("RemoveTemp(%q) succeeded", bad)
		}
	}
	if err := b.RemoveTemp(t.Context(), ".tmp/save-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveTemp(t.Context(), ".tmp/save-1"); err != nil {
		t.Errorf("removing it again: %v", err)
	}
	if temps, err := b.Temps(t.Context()); err != nil || len(temps) != 0 {
		t.Errorf("after RemoveTemp: %+v, %v", temps, err)
	}
	if _, err := os.Stat(filepath.Join(root, "keep")); err != nil {
		t.Errorf("an object went: %v", err)
	}
}

// TestTempFilesNotListed: in-flight uploads never show up in a listing.
func TestTempFilesNotListed(t *testing.T) {
	root := t.TempDir()
	b, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, tmpDir, "save-1"), []byte("partial"), 0o644)
	if err := b.List(t.Context(), "", func(fi backend.FileInfo) error {
		t.Errorf("listed %s", fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestMove(t *testing.T) {
	b, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	backendtest.RunMove(t, b)
}
