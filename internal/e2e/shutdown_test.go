package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// TestSIGTERMFinishesDownloads: a download in flight when the server is told to stop completes
// in full, then the server exits cleanly.
func TestSIGTERMFinishesDownloads(t *testing.T) {
	srv := startServer(t, t.TempDir(), "--store-compression", "as-uploaded")
	content := make([]byte, 64<<20)
	rand.Read(content)
	var narBuf bytes.Buffer
	w := nar.NewWriter(&narBuf)
	if err := w.File(false, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(narBuf.Bytes())
	url := srv.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(narBuf.Bytes()))
	req.SetBasicAuth("cached", srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT nar: %d", resp.StatusCode)
	}

	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond) // the server is now shutting down with the download open
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("download broke during shutdown: %v", err)
	}
	got := append(head, rest...)
	if !bytes.Equal(got, narBuf.Bytes()) {
		t.Fatalf("download during shutdown: got %d bytes, want %d identical ones", len(got), narBuf.Len())
	}
	select {
	case <-srv.done:
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit after the download finished")
	}
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("server exit code %d after SIGTERM", code)
	}
}
