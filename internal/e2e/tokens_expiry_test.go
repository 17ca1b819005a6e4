package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cachedWith runs a cached subcommand with stdin and returns its combined output.
func cachedWith(stdin string, args ...string) (string, error) {
	cmd := exec.Command(cachedBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestTokenFilesHoldDigestsAndTokensExpire: the server gets its admin and upload tokens only as
// sha256 digests (cached token hash makes them); real nix uploads with the upload token and
// the CLI manages tokens with the admin token. A token created with --expires works, then
// gets 401 saying when it expired, and token list shows it.
func TestTokenFilesHoldDigestsAndTokensExpire(t *testing.T) {
	requireNix(t)
	const adminTok, uploadTok = "cached_admin_e2e-secret", "upload-e2e-secret"
	creds := t.TempDir()
	var digests [2]string
	for i, tok := range []string{adminTok, uploadTok} {
		out, err := cachedWith(tok+"\n", "token", "hash")
		if err != nil || !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(out) {
			t.Fatalf("cached token hash: %v: %q", err, out)
		}
		digests[i] = strings.TrimSpace(out)
	}
	adminFile, uploadFile := filepath.Join(creds, "admin-digest"), filepath.Join(creds, "upload-digests")
	writeTestFile(t, adminFile, digests[0]+"\n")
	writeTestFile(t, uploadFile, "# ci\n"+digests[1]+"\n")
	data := t.TempDir()
	srv := startServer(t, data, "--admin-token-file", adminFile, "--upload-token-file", uploadFile)
	if _, err := os.Stat(filepath.Join(data, "admin-token")); err == nil {
		t.Error("DATA/admin-token was generated although --admin-token-file was given")
	}

	n := newNixClient(t, hostOf(srv.URL), uploadTok)
	c := buildClosure(t, n, 2048)
	n.run("nix", "copy", "--to", srv.URL, c.Top)
	substituteFresh(t, n, srv.URL, srv.PublicKey, c)
	if got := statusWith(t, "PUT", srv.URL+"/"+strings.Repeat("0", 32)+".narinfo", digests[1]); got != 401 {
		t.Errorf("the digest itself as upload password: %d, want 401", got)
	}

	plainAdmin := filepath.Join(creds, "admin-token")
	writeTestFile(t, plainAdmin, adminTok+"\n")
	admin := func(args ...string) (string, error) {
		return cachedWith("", append(args, "--url", srv.URL, "--admin-token-file", plainAdmin)...)
	}
	if out, err := cachedWith("", "token", "list", "--url", srv.URL, "--admin-token-file", adminFile); err == nil || !strings.Contains(out, "digest") {
		t.Errorf("token list with the digest file: %v: %s; want an error saying it holds a digest", err, out)
	}
	for _, bad := range []string{"soon", "0d", "-3d"} {
		if out, err := admin("token", "create", "x", "--expires", bad); err == nil || !strings.Contains(out, "--expires") {
			t.Errorf("token create --expires %s: %v: %s", bad, err, out)
		}
	}
	out, err := admin("token", "create", "short", "--scope", "write", "--expires", "3s")
	if err != nil {
		t.Fatalf("token create --expires 3s: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`token ([0-9a-f]+) \(short, scope write, expires (\S+)\):\n(cached_[0-9a-f]+)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("token create printed no token and expiry:\n%s", out)
	}
	id, expiry, secret := m[1], m[2], m[3]
	expires, err := time.Parse(time.RFC3339, expiry)
	if err != nil || time.Until(expires) > 4*time.Second {
		t.Fatalf("expiry %q: %v", expiry, err)
	}
	if _, err := admin("token", "create", "forever", "--scope", "read"); err != nil {
		t.Fatal(err)
	}
	list, err := admin("token", "list")
	if err != nil || !regexp.MustCompile(`(?m)^`+id+`\s+short\s+write\s+\S+\s+`+regexp.QuoteMeta(expiry)+`\s*$`).MatchString(list) ||
		!regexp.MustCompile(`(?m)forever\s+read\s+\S+\s+never\s*$`).MatchString(list) || !strings.Contains(list, "EXPIRES") {
		t.Errorf("token list: %v\n%s", err, list)
	}
	put := srv.URL + "/" + strings.Repeat("0", 32) + ".narinfo"
	if got := statusWith(t, "PUT", put, secret); got != 400 { // accepted; the empty body is then refused
		t.Errorf("PUT with the fresh token: %d, want 400", got)
	}

	time.Sleep(time.Until(expires) + time.Second)
	req, _ := http.NewRequest("PUT", put, strings.NewReader(""))
	req.SetBasicAuth("cached", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), "expired at") || !strings.Contains(string(body), id) {
		t.Errorf("PUT with the expired token: %d %q; want 401 saying it expired", resp.StatusCode, body)
	}
	if list, _ := admin("token", "list"); !strings.Contains(list, expiry+" (expired)") {
		t.Errorf("token list does not mark the expired token:\n%s", list)
	}
}

// serveExits runs `cached serve` with args on a fresh data directory, expecting it to refuse to
// start; one that starts anyway is stopped after 20s and reported as such.
func serveExits(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cachedBin, append([]string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), nil // it served: that is the failure
	}
	return string(out), err
}

// TestMalformedTokenFileLine: a malformed sha256: line stops the server with an error naming the
// file and the line.
func TestMalformedTokenFileLine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "upload-tokens")
	writeTestFile(t, file, "good-token\n\nsha256:0123\n")
	for _, flag := range []string{"--upload-token-file", "--admin-token-file"} {
		out, err := serveExits(t, flag, file)
		if err == nil || !strings.Contains(string(out), flag+" "+file+" line 3") {
			t.Errorf("serve %s with a malformed digest: %v\n%s", flag, err, out)
		}
	}
}
