package cache

import (
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend/disk"
)

// TestStartBackground: on replicas sharing a backend, the sync loop picks up a path another
// replica uploaded, and stop writes the access times the flusher holds before it returns.
func TestStartBackground(t *testing.T) {
	be, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := newTestCacheOn(t, be, Options{ReadThrough: true})
	b := newTestCacheOn(t, be, Options{ReadThrough: true})
	stop := a.StartBackground(BackgroundOptions{SyncInterval: 20 * time.Millisecond})
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()

	p := uploadPath(t, b, 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The index itself, not a.HasNarInfo, which would read through to the backend.
		if ok, err := a.index.HasNarInfo(p.hash); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sync loop did not index a path uploaded through another replica")
		}
		time.Sleep(10 * time.Millisecond)
	}

	a.Touch(p.hash)
	stop()
	stopped = true
	found := false
	if err := a.index.AccessTimes(func(key string, _ time.Time) { found = found || key == p.hash }); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Error("stop returned before the access time recorded just before it was written")
	}
}
