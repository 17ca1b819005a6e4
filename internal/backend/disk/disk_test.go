package disk

import (
	"os"
	"path/filepath"
	"testing"
	"time"

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

// TestStaleTempFilesRemoved: temporary files of a crashed process are cleaned at start-up, young
// ones (another process may be writing them) are kept.
func TestStaleTempFilesRemoved(t *testing.T) {
	root := t.TempDir()
	tmp := filepath.Join(root, tmpDir)
	os.MkdirAll(tmp, 0o755)
	old, young := filepath.Join(tmp, "save-old"), filepath.Join(tmp, "save-young")
	os.WriteFile(old, []byte("x"), 0o644)
	os.WriteFile(young, []byte("x"), 0o644)
	past := time.Now().Add(-2 * staleTemp)
	os.Chtimes(old, past, past)
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale temp file kept: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young temp file removed: %v", err)
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
