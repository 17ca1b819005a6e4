package signing

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests check key files against the real Nix client. Signing real store paths with Nix
// and comparing signatures is in internal/narinfo, which can build the fingerprint.

func requireNix(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nix", "nix-store"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found, and CI=true requires the real-client tests: %v", tool, err)
			}
			t.Skipf("%s not found; these tests run (and are required) when CI=true", tool)
		}
	}
}

func nix(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command\n")
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func TestNixGeneratedKeys(t *testing.T) {
	requireNix(t)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	nix(t, "", "nix-store", "--generate-binary-cache-key", "nix-made-1", sk, pk)

	k, err := LoadSecretKeyFile(sk)
	if err != nil {
		t.Fatal(err)
	}
	pkText, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "nix-made-1" || k.Public().String() != string(pkText) {
		t.Errorf("public key from Nix's secret key = %q, Nix wrote %q", k.Public(), pkText)
	}
	skText, _ := os.ReadFile(sk)
	if k.String() != string(skText) {
		t.Error("String() of Nix's secret key differs from the file Nix wrote")
	}
	pub, err := ParsePublicKey(string(pkText))
	if err != nil {
		t.Fatal(err)
	}
	fp := "1;/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10;sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i;205968;"
	if sig := k.Sign(fp); !pub.Verify(fp, sig) {
		t.Errorf("signature %q by Nix's key does not verify with Nix's public key", sig)
	}
}

// Nix must read the key files we write: it derives the same public key from our secret file.
func TestNixReadsOurKeys(t *testing.T) {
	requireNix(t)
	dir := t.TempDir()
	k, err := Generate("ours-1")
	if err != nil {
		t.Fatal(err)
	}
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if err := WriteKeyPair(sk, pk, k); err != nil {
		t.Fatal(err)
	}
	skText, _ := os.ReadFile(sk)
	got := strings.TrimSpace(nix(t, string(skText), "nix", "key", "convert-secret-to-public"))
	if want := k.Public().String(); got != want {
		t.Errorf("nix key convert-secret-to-public = %q, want %q", got, want)
	}

	// And we read what `nix key generate-secret` prints.
	secret := nix(t, "", "nix", "key", "generate-secret", "--key-name", "nix-made-2")
	k2, err := ParseSecretKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	pub := strings.TrimSpace(nix(t, secret, "nix", "key", "convert-secret-to-public"))
	if k2.Public().String() != pub {
		t.Errorf("public key %q, Nix derives %q", k2.Public(), pub)
	}
}
