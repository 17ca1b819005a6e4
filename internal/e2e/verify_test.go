package e2e

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// narURL returns the URL line of p's narinfo in srv's disk backend.
func narURL(t *testing.T, srv *serverProc, p string) string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, filepath.Join(srv.data, "store", hashOf(p)+".narinfo")), "\n") {
		if u, ok := strings.CutPrefix(line, "URL: "); ok {
			return u
		}
	}
	t.Fatalf("narinfo of %s has no URL", p)
	return ""
}

// failsWithProblems checks that a cached verify run exited non-zero because it found problems.
func failsWithProblems(t *testing.T, label, out string, err error) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("%s: want a non-zero exit, got %v\n%s", label, err, out)
	}
	if !strings.Contains(out, "1 problem(s) found") {
		t.Errorf("%s: does not say how many problems it found:\n%s", label, out)
	}
}

// TestVerify corrupts the NAR of a dependency on disk under a server that real nix pushed a
// closure to: cached verify names it and exits non-zero; with --quarantine the NAR moves under
// quarantine/ and the narinfos of the path and of its dependent go, so that no client is offered
// a path it cannot download; nix copy then pushes the closure again, it substitutes into a fresh
// store with signatures required, and the cache verifies clean.
func TestVerify(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 256<<10)
	n.run("nix", "copy", "--to", srv.URL, c.Top)

	out, err := cachedAdmin(t, srv, "verify")
	if err != nil || !strings.Contains(out, "no problems") {
		t.Fatalf("verify of a clean cache: %v\n%s", err, out)
	}

	dep := narURL(t, srv, c.Dep)
	file := filepath.Join(srv.data, "store", dep)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}

	out, err = cachedAdmin(t, srv, "verify")
	failsWithProblems(t, "verify of a corrupt NAR", out, err)
	if !strings.Contains(out, "corrupt "+dep) || !strings.Contains(out, c.Dep) {
		t.Errorf("verify does not name the corrupt NAR %s of %s:\n%s", dep, c.Dep, out)
	}
	if _, err := os.Stat(file); err != nil || stored(srv, c.Dep) != http.StatusOK {
		t.Fatalf("verify without --quarantine changed the cache: %v", err)
	}

	out, err = cachedAdmin(t, srv, "verify", "--quarantine")
	failsWithProblems(t, "verify --quarantine", out, err)
	if _, err := os.Stat(filepath.Join(srv.data, "store", "quarantine", dep)); err != nil {
		t.Errorf("the corrupt NAR is not under quarantine/: %v\n%s", err, out)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the corrupt NAR is still served from %s: %v", dep, err)
	}
	for _, p := range []string{c.Dep, c.Top} {
		resp, err := http.Get(srv.URL + "/" + hashOf(p) + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if stored(srv, p) != http.StatusNotFound || resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s is still offered after its closure's NAR was quarantined:\n%s", p, out)
		}
	}

	n.run("nix", "copy", "--to", srv.URL, c.Top)
	substituteFresh(t, n, srv.URL, srv.PublicKey, c)
	out, err = cachedAdmin(t, srv, "verify")
	if err != nil || !strings.Contains(out, "no problems") {
		t.Fatalf("verify after pushing again: %v\n%s", err, out)
	}
	out, err = cachedAdmin(t, srv, "verify", "--sample", "0.5")
	if err != nil || !strings.Contains(out, "1 hashed") {
		t.Fatalf("verify --sample 0.5 of 2 NARs: %v\n%s", err, out)
	}
}

// TestLeftoversRemovedAtStart: a server killed mid-upload leaves a temporary file in store/.tmp
// and a staged upload in store/staging/. The next start (index lock held: nothing else can be
// writing) removes them whatever their age and logs each; while a server runs, cached verify
// reports those older than its grace period and leaves the younger ones (uploads in progress).
func TestLeftoversRemovedAtStart(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, data)
	srv.Stop()
	store := filepath.Join(data, "store")
	write := func(name string, age time.Duration) string {
		t.Helper()
		p := filepath.Join(store, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half an upload"), 0o644); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
		return p
	}
	crashed := []string{".tmp/save-1234", "staging/0123456789abcdef01234567"}
	for _, name := range crashed {
		write(name, time.Minute) // younger than an hour: an age rule would keep them
	}

	srv = startServer(t, data)
	logged := func(name string) bool {
		return strings.Contains(srv.stderr.String(), `msg="removed a partial upload left by an earlier run" file=`+name+" ")
	}
	for _, name := range crashed {
		if _, err := os.Stat(filepath.Join(store, filepath.FromSlash(name))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after a start: %v", name, err)
		}
		for i := 0; i < 50 && !logged(name); i++ { // log lines go out in batches
			time.Sleep(100 * time.Millisecond)
		}
		if !logged(name) {
			t.Errorf("the start-up log does not name %s:\n%s", name, srv.stderr.String())
		}
	}

	// Left behind while this server runs (a write that never finished), and one in progress.
	write(".tmp/save-old", 2*time.Hour)
	young := write(".tmp/save-young", 0)
	out, err := cachedAdmin(t, srv, "verify")
	failsWithProblems(t, "verify with a leftover temporary file", out, err)
	if !strings.Contains(out, "leftover .tmp/save-old") || !strings.Contains(out, "1 leftovers") {
		t.Errorf("verify does not report .tmp/save-old:\n%s", out)
	}
	if strings.Contains(out, "save-young") {
		t.Errorf("verify reports a write in progress:\n%s", out)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("verify removed a temporary file: %v", err)
	}
}
