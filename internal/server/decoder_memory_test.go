package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/membudget"
	"github.com/cached-dev/cached/internal/server"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// withFile makes u upload file (its name, FileHash and FileSize follow).
func (u *upload) withFile(file []byte) *upload {
	u.File = file
	fh := sha256Hash(file)
	u.Info.FileHash, u.Info.FileSize = fh, uint64(len(file))
	u.Info.URL = "nar/" + nixbase32.EncodeToString(fh.Digest) + ".nar.xz"
	u.NarPath = "/" + u.Info.URL
	return u
}

// TestDecoderMemoryBudget: the decoders of concurrent uploads share a budget. An upload whose
// stream declares more than what others left waits for room, then gets 503 with Retry-After (a
// narinfo body as well as a NAR); one that could never fit gets 413 naming --decoder-memory at
// once; when memory is given back, uploads go through again.
func TestDecoderMemoryBudget(t *testing.T) {
	budget := membudget.New(100<<20, 300*time.Millisecond)
	tc := newTestCacheWith(t, cache.Options{DecoderMemory: budget}, func(c *server.Config) { c.DecoderMemory = budget })
	// 64 MiB dictionaries: one fits in 100 MiB, two do not.
	held := newUpload(t, "held", "xz")
	held.withFile(xzWithDict(t, held.File, 28))
	other := newUpload(t, "other", "xz")
	other.withFile(xzWithDict(t, other.File, 28))

	// The held upload sends its stream's headers, then nothing until the end of the test.
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPut, tc.URL+held.NarPath, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("nix", testToken)
	req.ContentLength = int64(len(held.File))
	heldDone := make(chan int, 1)
	go func() {
		resp, err := tc.client.Do(req)
		if err != nil {
			t.Errorf("held upload: %v", err)
			heldDone <- 0
			return
		}
		resp.Body.Close()
		heldDone <- resp.StatusCode
	}()
	if _, err := pw.Write(held.File[:64]); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); budget.Reserved() < 64<<20; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the held upload reserved %d bytes, want its 64 MiB dictionary", budget.Reserved())
		}
	}

	r := tc.put(t, other.NarPath, other.File)
	mustStatus(t, "NAR upload past the budget", r, http.StatusServiceUnavailable)
	if r.Header.Get("Retry-After") != "5" || !strings.Contains(string(r.Body), "--decoder-memory") {
		t.Errorf("503 with Retry-After %q, body %q; want 5 and a body naming --decoder-memory", r.Header.Get("Retry-After"), r.Body)
	}
	body := xzWithDict(t, compress(t, "xz", other.Text()), 28)
	r = tc.put(t, other.NarInfoPath(), body, withHeader("Content-Encoding", "xz"))
	mustStatus(t, "narinfo body past the budget", r, http.StatusServiceUnavailable)
	if r.Header.Get("Retry-After") != "5" {
		t.Errorf("narinfo 503 without Retry-After: %v", r.Header)
	}

	// 128 MiB never fits in 100 MiB: no waiting.
	huge := newUpload(t, "huge", "xz")
	huge.withFile(xzWithDict(t, huge.File, 30))
	start := time.Now()
	r = tc.put(t, huge.NarPath, huge.File)
	mustStatus(t, "NAR upload larger than the budget", r, http.StatusRequestEntityTooLarge)
	if !strings.Contains(string(r.Body), "--decoder-memory") {
		t.Errorf("413 body %q does not name --decoder-memory", r.Body)
	}
	if waited := time.Since(start); waited > 250*time.Millisecond {
		t.Errorf("the 413 took %s: it waited for what can never fit", waited)
	}

	// The held upload ends; its memory comes back, and the other goes through.
	if _, err := pw.Write(held.File[64:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-heldDone; code != http.StatusOK {
		t.Fatalf("held upload: %d", code)
	}
	mustStatus(t, "NAR upload once memory is back", tc.put(t, other.NarPath, other.File), http.StatusOK)
	if n := budget.Reserved(); n != 0 {
		t.Errorf("%d bytes still reserved after every upload ended", n)
	}
	for _, name := range tc.files(t) {
		if isTemporary(name) {
			t.Errorf("left behind: %s", name)
		}
	}
}
