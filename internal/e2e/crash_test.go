package e2e

import (
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// TestKillDuringUpload kills the server with SIGKILL in the middle of a large NAR upload,
// restarts it, and shows that neither the NAR nor a narinfo for the interrupted path is visible,
// and that nix can then upload the same path cleanly and substitute it.
func TestKillDuringUpload(t *testing.T) {
	requireNix(t)
	data := t.TempDir()
	srv := startServer(t, data)
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 48<<20)
	hash := strings.SplitN(strings.TrimPrefix(c.Top, "/nix/store/"), "-", 2)[0]

	// The NAR as nix would upload it with compression=none.
	narFile := filepath.Join(t.TempDir(), "top.nar")
	dump := exec.Command("nix-store", "--dump", c.Top)
	f, err := os.Create(narFile)
	if err != nil {
		t.Fatal(err)
	}
	dump.Stdout = f
	if err := dump.Run(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	body, err := os.ReadFile(narFile)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	narURL := srv.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"

	// Send half the body, then kill the server while the request is in flight.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPut, narURL, pr)
	req.ContentLength = int64(len(body))
	req.SetBasicAuth("cached", srv.Token)
	req.Header.Set("Content-Type", "application/x-nix-nar")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				err = nil
				done <- errUploadSucceeded
				return
			}
		}
		done <- err
	}()
	if _, err := pw.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the server write what it got
	srv.Kill()
	pw.CloseWithError(io.ErrClosedPipe)
	if err := <-done; err == errUploadSucceeded {
		t.Fatal("the interrupted upload was answered with success")
	}

	srv2 := startServer(t, data)
	if !strings.Contains(srv2.stderr.String(), "reindexing") {
		t.Errorf("restart after SIGKILL did not reindex:\n%s", srv2.stderr.String())
	}
	base := srv2.URL
	if code, _ := get(t, base+"/"+hash+".narinfo"); code != http.StatusNotFound {
		t.Errorf("narinfo of the interrupted path: status %d, want 404", code)
	}
	resp, err := http.Head(base + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of the interrupted NAR: status %d, want 404", resp.StatusCode)
	}
	if entries, _ := os.ReadDir(filepath.Join(data, "store", "nar")); len(entries) != 0 {
		t.Errorf("the interrupted upload left %d visible NAR files", len(entries))
	}

	// A clean re-upload of the same path works and substitutes.
	n2 := newNixClient(t, hostOf(base), srv2.Token)
	n2.run("nix", "copy", "--to", base+"?compression=none", c.Top)
	substituteFresh(t, n2, base, srv2.PublicKey, c)
}

var errUploadSucceeded = &uploadSucceeded{}

type uploadSucceeded struct{}

func (*uploadSucceeded) Error() string { return "upload succeeded" }
