package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRequireUploadSigs: with --require-upload-sigs, nix copy of paths the builder did not sign
// is refused; after `nix store sign` with the builder's key the same copy succeeds, and the
// paths substitute with the server's own key trusted.
func TestRequireUploadSigs(t *testing.T) {
	requireNix(t)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "builder.sk"), filepath.Join(dir, "builder.pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "builder.test-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("generate key: %v\n%s", err, out)
	}
	builderPK := strings.TrimSpace(readFile(t, pk))
	srv := startServer(t, t.TempDir(), "--require-upload-sigs", builderPK)
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 2048)
	_, err := n.try("nix", "copy", "--to", srv.URL, c.Top)
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("nix copy of unsigned paths: %v, want a 400 refusal", err)
	}
	n.run("nix", "store", "sign", "--key-file", sk, "-r", c.Top)
	n.run("nix", "copy", "--to", srv.URL, c.Top)
	// The server adds its own signature; clients trust the server's key.
	n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", srv.PublicKey, "-r", c.Top)
	substituteFresh(t, n, srv.URL, srv.PublicKey, c)
}
