package watch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/push"
)

const (
	pathA = "/nix/store/00000000000000000000000000000000-a"
	pathB = "/nix/store/11111111111111111111111111111111-b"
	pathC = "/nix/store/22222222222222222222222222222222-c.drv"
)

func TestQueueOrderAndDurability(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	q, err := OpenQueue(dir, push.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	// Queued in the order C, A, B: listed in that order, whatever their names.
	for i, p := range []string{pathC, pathA, pathB} {
		if err := q.Add(p); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(time.Duration(i-10) * time.Second)
		os.Chtimes(filepath.Join(dir, filepath.Base(p)), at, at)
	}
	if err := q.Add(pathA); err != nil { // twice: still one entry
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".known"), []byte("x\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "not-a-store-path"), nil, 0o644)

	// A new Queue on the same directory (a restart) sees the same entries.
	q2, err := OpenQueue(dir, push.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := q2.List(0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{pathC, pathA, pathB}; !slices.Equal(got, want) {
		t.Fatalf("List: got %v, want %v", got, want)
	}
	if got, _ := q2.List(2); len(got) != 2 {
		t.Fatalf("List(2): got %v", got)
	}
	if err := q2.Remove(pathC, pathC); err != nil {
		t.Fatal(err)
	}
	if err := q2.Fail(pathA, errors.New("PUT x: 400 Bad Request: bad signature")); err != nil {
		t.Fatal(err)
	}
	if got, _ := q2.List(0); !slices.Equal(got, []string{pathB}) {
		t.Fatalf("after Remove and Fail: %v, want only %s", got, pathB)
	}
	failed, err := q2.Failed()
	if err != nil || !slices.Equal(failed, []string{pathA}) {
		t.Fatalf("Failed: %v %v", failed, err)
	}
	why, _ := os.ReadFile(filepath.Join(dir, "failed", filepath.Base(pathA)))
	if !strings.Contains(string(why), "bad signature") {
		t.Fatalf("failed/ entry holds %q, want the reason", why)
	}
}

func TestQueueRefusesWhatIsNoStorePath(t *testing.T) {
	q, err := OpenQueue(t.TempDir(), push.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"/etc/passwd",
		"/nix/store/short-a",
		"/nix/store/00000000000000000000000000000000-a/sub",
		"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-bad-alphabet",
		"/nix/store/../../etc/00000000000000000000000000000000-a",
		"/other/store/00000000000000000000000000000000-a",
		"relative/00000000000000000000000000000000-a",
	} {
		err := q.Add(bad)
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("Add(%q): %v, want an error naming it", bad, err)
		}
	}
	if got, _ := q.List(0); len(got) != 0 {
		t.Fatalf("bad paths queued: %v", got)
	}
	if _, err := OpenQueue("", push.StoreDir); err == nil {
		t.Error("OpenQueue(\"\") succeeded")
	}
}

func TestIgnored(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/nix/store/00000000000000000000000000000000-hello.drv", true},
		{"/nix/store/00000000000000000000000000000000-source", true},
		{"/nix/store/00000000000000000000000000000000-nixpkgs-source", true},
		{"/nix/store/00000000000000000000000000000000-hello-2.12", false},
		{"/nix/store/00000000000000000000000000000000-sources", false},
	} {
		if got := Ignored(tc.path, DefaultIgnore); got != tc.want {
			t.Errorf("Ignored(%s) = %v, want %v", tc.path, got, tc.want)
		}
	}
	if !Ignored("/nix/store/00000000000000000000000000000000-linux-6.1", []string{"linux-*"}) {
		t.Error("glob linux-* does not match linux-6.1")
	}
	c := Config{Push: push.Options{URL: "http://127.0.0.1:5000"}, Ignore: []string{"[unclosed"}}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "[unclosed") {
		t.Errorf("a bad glob: %v, want an error naming it", err)
	}
}

func TestPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&push.HTTPError{Status: 400}, true},
		{&push.HTTPError{Status: 413}, true},
		{&push.HTTPError{Status: 408}, false},
		{&push.HTTPError{Status: 429}, false},
		{&push.HTTPError{Status: 503}, false},
		{fmt.Errorf("%w: %w", push.ErrAuth, &push.HTTPError{Status: 401}), false},
		{fmt.Errorf("x: %w", push.ErrCorrupt), true},
		{&push.DependencyError{Path: pathA, Err: &push.HTTPError{Status: 400}}, true},
		{&push.DependencyError{Path: pathA, Err: errors.New("connection refused")}, false},
		{errors.New("connection refused"), false},
	} {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestQueueLock: a second pusher of one queue is refused, naming the queue; once the first
// releases it, the queue can be taken again.
func TestQueueLock(t *testing.T) {
	dir := t.TempDir()
	q1, _ := OpenQueue(dir, push.StoreDir)
	q2, _ := OpenQueue(dir, push.StoreDir)
	release, err := q1.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q2.Lock(); !errors.Is(err, ErrQueueBusy) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Lock: %v, want ErrQueueBusy naming %s", err, dir)
	}
	if err := q2.Add(pathA); err != nil {
		t.Fatalf("Add to a locked queue: %v", err)
	}
	release()
	release2, err := q2.Lock()
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	release2()
}
