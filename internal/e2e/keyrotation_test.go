package e2e

import (
	"html"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// keygen makes a signing key pair with `cached keygen` and returns the secret key file and the
// public key.
func keygen(t *testing.T, dir, name string) (secretFile, publicKey string) {
	t.Helper()
	sk, pk := filepath.Join(dir, name+".secret"), filepath.Join(dir, name+".public")
	if out, err := exec.Command(cachedBin, "keygen", name, "--secret-key-file", sk, "--public-key-file", pk).CombinedOutput(); err != nil {
		t.Fatalf("cached keygen %s: %v\n%s", name, err, out)
	}
	return sk, strings.TrimSpace(readFile(t, pk))
}

// substitutesFrom realises p from url into a fresh store with signatures required and only pk
// trusted.
func substitutesFrom(t *testing.T, n *nixClient, url, pk, p string) error {
	t.Helper()
	fresh := filepath.Join(t.TempDir(), "store")
	t.Cleanup(func() { exec.Command("chmod", "-R", "u+w", filepath.Dir(fresh)).Run() })
	_, err := n.try("nix-store", "--store", fresh, "--realise", p,
		"--option", "substituters", url,
		"--option", "trusted-public-keys", pk,
		"--option", "require-sigs", "true")
	return err
}

func resign(t *testing.T, data string, args ...string) string {
	t.Helper()
	out, err := exec.Command(cachedBin, append([]string{"resign", "--data", data}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("cached resign %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestKeyRotation rotates the signing key from A to B with real nix clients trusting one key
// each: paths uploaded under A substitute for both once B is added, and for the B client once A
// is gone; cached resign stores B's signatures in the backend (plain nix reading it directly
// accepts them), and --drop-others removes A's.
func TestKeyRotation(t *testing.T) {
	requireNix(t)
	keys := t.TempDir()
	skA, pkA := keygen(t, keys, "cache-a-1")
	skB, pkB := keygen(t, keys, "cache-b-1")
	data := t.TempDir()

	srv := startServer(t, data, "--secret-key-file", skA)
	uploader := newNixClient(t, hostOf(srv.URL), srv.Token)
	old := buildClosure(t, uploader, 4096)
	uploader.run("nix", "copy", "--to", srv.URL, old.Top)
	srv.Stop()

	// A and B (comma-separated): both clients substitute what A alone signed, and a new upload.
	srv = startServer(t, data, "--secret-key-file", skA+","+skB)
	uploader = newNixClient(t, hostOf(srv.URL), srv.Token)
	added := buildClosure(t, uploader, 4096)
	uploader.run("nix", "copy", "--to", srv.URL, added.Top)
	clientA, clientB := newNixClient(t, hostOf(srv.URL), ""), newNixClient(t, hostOf(srv.URL), "")
	for _, c := range []closure{old, added} {
		substituteFresh(t, clientA, srv.URL, pkA, c)
		substituteFresh(t, clientB, srv.URL, pkB, c)
	}
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(html.UnescapeString(string(page)), "trusted-public-keys = "+pkA+" "+pkB) {
		t.Errorf("landing page does not list both keys, A first:\n%s", page)
	}
	srv.Stop()

	// Only B (the flag given once): the B client still substitutes both closures.
	srv = startServer(t, data, "--secret-key-file", skB)
	for _, c := range []closure{old, added} {
		substituteFresh(t, clientB, srv.URL, pkB, c)
	}
	srv.Stop()

	// The backend itself lacks B's signature on the old closure until cached resign stores it.
	backendURL := "file://" + filepath.Join(data, "store")
	if err := substitutesFrom(t, clientB, backendURL, pkB, old.Top); err == nil {
		t.Error("the backend holds B's signature of a path uploaded under A before cached resign")
	}
	if out := resign(t, data, "--secret-key-file", skB); !strings.Contains(out, "2 re-signed") {
		t.Errorf("cached resign: want both old paths re-signed:\n%s", out)
	}
	if out := resign(t, data, "--secret-key-file", skB); !strings.Contains(out, "0 re-signed") {
		t.Errorf("second cached resign: want nothing to do:\n%s", out)
	}
	for _, c := range []closure{old, added} {
		substituteFresh(t, clientB, backendURL, pkB, c)
	}
	// A's signatures are kept by default and dropped on request.
	if err := substitutesFrom(t, clientA, backendURL, pkA, old.Top); err != nil {
		t.Errorf("A's signature was dropped without --drop-others: %v", err)
	}
	if out := resign(t, data, "--secret-key-file", skB, "--drop-others"); !strings.Contains(out, "4 re-signed") {
		t.Errorf("cached resign --drop-others: want all 4 paths rewritten:\n%s", out)
	}
	if err := substitutesFrom(t, clientA, backendURL, pkA, old.Top); err == nil {
		t.Error("A's signature survived --drop-others")
	}
	srv = startServer(t, data, "--secret-key-file", skB)
	substituteFresh(t, clientB, srv.URL, pkB, old)
	if err := substitutesFrom(t, clientA, srv.URL, pkA, old.Top); err == nil {
		t.Error("a client trusting only the retired key A substitutes after --drop-others")
	}
}

// TestSigningKeyFileErrors: a missing or malformed --secret-key-file stops the server with an
// error naming the flag and the file.
func TestSigningKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	sk, _ := keygen(t, dir, "good-1")
	bad := filepath.Join(dir, "bad.secret")
	writeTestFile(t, bad, "good-1:bm90IGEga2V5\n")
	for _, file := range []string{filepath.Join(dir, "missing.secret"), bad, sk + "," + sk} {
		out, err := serveExits(t, "--secret-key-file", file)
		if err == nil {
			t.Errorf("serve --secret-key-file %s started", file)
			continue
		}
		name := strings.Split(file, ",")[0]
		if !strings.Contains(string(out), "--secret-key-file") || !strings.Contains(string(out), name) {
			t.Errorf("serve --secret-key-file %s: %s; want the flag and the file named", file, out)
		}
	}
}
