package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryCompressionAccepted uploads, with each client, with the compressions nix offers
// beyond the ones TestNixRoundTrip covers with a large file, and substitutes each back.
func TestEveryCompressionAccepted(t *testing.T) {
	forEachNix(t, func(t *testing.T, v nixVersion) {
		for _, tc := range []struct{ comp, policy string }{
			{"bzip2", "zstd"}, {"br", "zstd"}, {"bzip2", "as-uploaded"}, {"br", "as-uploaded"}, {"zstd", "xz"},
		} {
			t.Run(tc.comp+"-stored-as-"+tc.policy, func(t *testing.T) {
				srv := startServer(t, t.TempDir(), "--store-compression", tc.policy)
				n := newNixClientOf(t, v, hostOf(srv.URL), srv.Token)
				c := buildClosure(t, n, 256<<10)
				n.run("nix", "copy", "--to", srv.URL+"?compression="+tc.comp, c.Top)
				n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", srv.PublicKey, "-r", c.Top)
				substituteFresh(t, n, srv.URL, srv.PublicKey, c)
			})
		}
	})
}

// TestNixGeneratedKeyAndEnv runs the server on a key made by nix-store
// --generate-binary-cache-key, configured through CACHED_* environment variables, and checks that
// nix accepts its signatures.
func TestNixGeneratedKeyAndEnv(t *testing.T) {
	requireNix(t)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "e2e.example.org-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("generate key: %v\n%s", err, out)
	}
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# CI upload tokens\n\ntoken-one\ntoken-two\n"), 0o600)
	t.Setenv("CACHED_SECRET_KEY_FILE", sk)
	t.Setenv("CACHED_UPLOAD_TOKEN_FILE", tokens)
	data := filepath.Join(dir, "data")
	srv := startServer(t, data)
	nixPK := strings.TrimSpace(readFile(t, pk))
	n := newNixClient(t, hostOf(srv.URL), "token-two")
	c := buildClosure(t, n, 4096)
	n.run("nix", "copy", "--to", srv.URL, c.Top)
	n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", nixPK, "-r", c.Top)
	substituteFresh(t, n, srv.URL, nixPK, c)
	if _, err := os.Stat(filepath.Join(data, "secret-key")); err == nil {
		t.Error("a key was generated although --secret-key-file was given")
	}
}

// TestListingAndBuildLog: nix copy with write-nar-listing=true stores <hash>.ls, which is
// served as the JSON nix wrote; nix store copy-log uploads a build log that nix log reads back;
// with each client.
func TestListingAndBuildLog(t *testing.T) {
	forEachNix(t, func(t *testing.T, v nixVersion) { listingAndBuildLog(t, v) })
}

func listingAndBuildLog(t *testing.T, v nixVersion) {
	srv := startServer(t, t.TempDir())
	n := newNixClientOf(t, v, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 1024)
	n.run("nix", "copy", "--to", srv.URL+"?write-nar-listing=true", c.Top)
	hash := strings.SplitN(strings.TrimPrefix(c.Top, "/nix/store/"), "-", 2)[0]
	code, body := get(t, srv.URL+"/"+hash+".ls")
	if code != http.StatusOK {
		t.Fatalf("GET %s.ls: %d", hash, code)
	}
	var ls struct {
		Version int `json:"version"`
		Root    struct {
			Type    string                     `json:"type"`
			Entries map[string]json.RawMessage `json:"entries"`
		} `json:"root"`
	}
	if err := json.Unmarshal([]byte(body), &ls); err != nil || ls.Version != 1 || ls.Root.Type != "directory" || ls.Root.Entries["bin"] == nil {
		t.Fatalf("listing: %v %s", err, body)
	}

	drv := strings.TrimSpace(n.run("nix-store", "-q", "--deriver", c.Top))
	n.run("nix", "store", "copy-log", "--to", srv.URL, drv)
	if code, _ := get(t, srv.URL+"/log/"+filepath.Base(drv)); code != http.StatusOK {
		t.Fatalf("GET log/%s: %d", filepath.Base(drv), code)
	}
	logText := n.run("nix", "log", "--store", srv.URL, c.Top)
	_ = logText // the builder prints nothing; that nix found the log is the check
}

// TestReindexRebuildsLostIndex deletes the index of a stopped server, rebuilds it with
// `cached reindex`, and substitutes everything again.
func TestReindexRebuildsLostIndex(t *testing.T) {
	requireNix(t)
	data := t.TempDir()
	srv := startServer(t, data)
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 8192)
	n.run("nix", "copy", "--to", srv.URL, c.Top)
	pk := srv.PublicKey
	srv.Stop()
	if err := os.RemoveAll(filepath.Join(data, "index")); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cachedBin, "reindex", "--data", data).CombinedOutput()
	if err != nil {
		t.Fatalf("cached reindex: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "2 narinfos indexed") {
		t.Errorf("reindex summary does not say 2 narinfos were indexed:\n%s", out)
	}
	srv2 := startServer(t, data)
	n.run("nix", "store", "verify", "--store", srv2.URL, "--trusted-public-keys", pk, "-r", c.Top)
	substituteFresh(t, n, srv2.URL, pk, c)
}
