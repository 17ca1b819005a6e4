package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestUploaderSubstitutesWithItsNarinfoCache: the machine that ran nix copy keeps, in its
// narinfo cache (positive TTL 30 days by default), the narinfo it uploaded: the uploaded URL
// (xz, nix's default) and its own signatures. When it later substitutes the path (say after a
// local gc) nix uses that narinfo, so the uploaded name must still download although the server
// stores the NAR as zstd. With each client.
func TestUploaderSubstitutesWithItsNarinfoCache(t *testing.T) {
	forEachNix(t, uploaderSubstitutesWithItsNarinfoCache)
}

func uploaderSubstitutesWithItsNarinfoCache(t *testing.T, v nixVersion) {
	srv := startServer(t, t.TempDir())
	n := newNixClientOf(t, v, hostOf(srv.URL), srv.Token)
	// nix's own narinfo cache TTLs, as a user has them.
	for i, e := range n.env {
		if conf, ok := strings.CutPrefix(e, "NIX_CONFIG="); ok {
			conf = strings.ReplaceAll(conf, "narinfo-cache-negative-ttl = 0", "")
			n.env[i] = "NIX_CONFIG=" + strings.ReplaceAll(conf, "narinfo-cache-positive-ttl = 0", "")
		}
	}
	dir := n.tempDir() // the client reads the key
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "builder.test-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	builderPK := strings.TrimSpace(readFile(t, pk))
	c := buildClosure(t, n, 64<<10)
	n.run("nix", "store", "sign", "--key-file", sk, "-r", c.Top)
	n.run("nix", "copy", "--to", srv.URL, c.Top) // xz upload, stored as zstd

	fresh := n.freshStore(t)
	n.run("nix-store", "--store", fresh, "--realise", c.Top,
		"--option", "substituters", srv.URL,
		"--option", "trusted-public-keys", srv.PublicKey+" "+builderPK,
		"--option", "require-sigs", "true")
	if _, err := os.Stat(fresh + c.Top + "/big.bin"); err != nil {
		t.Fatalf("substitution with the uploader's cached narinfo did not produce the path: %v", err)
	}
	if !strings.Contains(srv.stderr.String(), "serving a NAR under its uploaded name by recompression") {
		t.Fatal("nix did not use the narinfo it cached when uploading; this test no longer shows the case it is about")
	}
	// The server recompresses only for a valid token: the substitution above shows that Nix
	// sends its netrc credentials on downloads. Without one, the uploaded name is refused.
	m := regexp.MustCompile(`nar=(nar/[0-9a-z]{52}\.nar\.xz)`).FindStringSubmatch(srv.stderr.String())
	if m == nil {
		t.Fatalf("no uploaded NAR name in the log:\n%s", tail(srv.stderr.String(), 20))
	}
	resp, err := http.Get(srv.URL + "/" + m[1])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous GET of the uploaded name %s: %s, want 401", m[1], resp.Status)
	}
}
