package e2e

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWriteIdleTimeoutFlag: a real server started with --write-idle-timeout drops a client that
// reads nothing of a NAR nix uploaded, and a negative value stops start-up naming the flag.
func TestWriteIdleTimeoutFlag(t *testing.T) {
	requireNix(t)
	out, err := exec.Command(cachedBin, "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--write-idle-timeout=-1s").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--write-idle-timeout -1s") {
		t.Fatalf("a negative --write-idle-timeout: %v\n%s", err, out)
	}

	srv := startServer(t, t.TempDir(), "--write-idle-timeout", "1s")
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 24<<20) // random bytes: the stored NAR stays that big
	n.run("nix", "copy", "--to", srv.URL+"?compression=zstd", c.Top)
	resp, err := http.Get(srv.URL + "/" + filepath.Base(c.Top)[:32] + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	nar := fieldOf(string(text), "URL")
	if nar == "" {
		t.Fatalf("no URL in the narinfo:\n%s", text)
	}

	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
		return nil
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /"+nar+" HTTP/1.1\r\nHost: cache\r\n\r\n")
	time.Sleep(3 * time.Second) // reads nothing
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if isTimeout := err != nil && errors.As(err, &ne) && ne.Timeout(); isTimeout || got > 24<<20 {
		t.Fatalf("read %d bytes, then %v: the server kept a connection that read nothing for 3s", got, err)
	}
	if !strings.Contains(srv.stderr.String(), "client read nothing for 1s (--write-idle-timeout)") {
		t.Errorf("no log line names the write idle timeout:\n%s", tail(srv.stderr.String(), 10))
	}
}
