package narinfo_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

// These tests run the real Nix client (2.8 here) to check that what we write and sign is what
// Nix writes and signs. They build two tiny input-addressed paths offline (content-addressed
// paths would not need signatures, see docs/protocol.md) and sign them in a private chroot
// store, so the system store's database is left as it was.

// nixEnv is the environment for nix commands: offline, no build users or sandbox (so it runs
// as root in a container), and a private cache directory so that Nix's narinfo disk cache
// cannot answer from an earlier run.
func nixEnv(t *testing.T) []string {
	return append(os.Environ(),
		"NIX_CONFIG=experimental-features = nix-command\nbuild-users-group =\nsandbox = false\nsubstituters =\n",
		"XDG_CACHE_HOME="+t.TempDir(),
	)
}

func requireNix(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nix", "nix-build", "nix-store"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found, and CI=true requires the real-client tests: %v", tool, err)
			}
			t.Skipf("%s not found; these tests run (and are required) when CI=true", tool)
		}
	}
}

// nixRun runs a nix command and returns its stdout, failing the test with stderr on error.
func nixRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := nixTry(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + "\n" + e.stderr }

func nixTry(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &cmdError{err, stderr.String()}
	}
	return stdout.String(), nil
}

const testDrvs = `rec {
  leaf = builtins.derivation { builder = "/bin/sh"; args = ["-c" "echo leaf > $out"];
    system = builtins.currentSystem; name = "cached-narinfo-test-leaf"; };
  # References the leaf and itself, so the fingerprint has a sorted, multi-element list.
  top = builtins.derivation { builder = "/bin/sh"; args = ["-c" "echo ${leaf} $out > $out"];
    system = builtins.currentSystem; name = "cached-narinfo-test-top"; };
}
`

// buildTestPath builds the test derivations and returns the top path.
func buildTestPath(t *testing.T, env []string) string {
	t.Helper()
	expr := filepath.Join(t.TempDir(), "test.nix")
	if err := os.WriteFile(expr, []byte(testDrvs), 0o644); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(nixRun(t, env, "nix-build", "--no-out-link", expr, "-A", "top"))
}

// chrootStore returns a fresh store (its root in a temp dir) holding path's closure.
func chrootStore(t *testing.T, env []string, path string) string {
	t.Helper()
	root := t.TempDir()
	// Store files are read-only; make them removable before TempDir's cleanup runs.
	t.Cleanup(func() {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	nixRun(t, env, "nix", "copy", "--no-check-sigs", "--to", root, path)
	return root
}

type pathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	Signatures []string `json:"signatures"`
}

func nixPathInfo(t *testing.T, env []string, store, path string) pathInfo {
	t.Helper()
	var infos []pathInfo
	out := nixRun(t, env, "nix", "path-info", "--store", store, "--json", "--sigs", path)
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("path-info output %q: %v", out, err)
	}
	return infos[0]
}

// narInfoOf builds our NarInfo for what Nix reports, to compute the fingerprint our way.
func narInfoOf(t *testing.T, pi pathInfo) *narinfo.NarInfo {
	t.Helper()
	h, err := narinfo.ParseHash(pi.NarHash) // Nix 2.8 prints SRI here
	if err != nil {
		t.Fatal(err)
	}
	ni := &narinfo.NarInfo{StorePath: pi.Path, NarHash: h, NarSize: pi.NarSize}
	for _, r := range pi.References {
		ni.References = append(ni.References, filepath.Base(r))
	}
	return ni
}

func TestNixSignaturesMatchOurs(t *testing.T) {
	requireNix(t)
	env := nixEnv(t)
	path := buildTestPath(t, env)
	store := chrootStore(t, env, path)
	dir := t.TempDir()

	// A key made by Nix, signing with Nix: our Sign must give the identical string.
	sk, pk := filepath.Join(dir, "nix.sk"), filepath.Join(dir, "nix.pk")
	nixRun(t, env, "nix-store", "--generate-binary-cache-key", "nix-made-1", sk, pk)
	nixKey, err := signing.LoadSecretKeyFile(sk)
	if err != nil {
		t.Fatal(err)
	}
	pkText, _ := os.ReadFile(pk)
	nixPub, err := signing.ParsePublicKey(string(pkText))
	if err != nil {
		t.Fatal(err)
	}
	nixRun(t, env, "nix", "store", "sign", "--store", store, "--key-file", sk, path)

	// A key made by us, written by us, used by Nix.
	ourKey, err := signing.Generate("ours-1")
	if err != nil {
		t.Fatal(err)
	}
	ourSK, ourPK := filepath.Join(dir, "ours.sk"), filepath.Join(dir, "ours.pk")
	if err := signing.WriteKeyPair(ourSK, ourPK, ourKey); err != nil {
		t.Fatal(err)
	}
	nixRun(t, env, "nix", "store", "sign", "--store", store, "--key-file", ourSK, path)

	pi := nixPathInfo(t, env, store, path)
	fp := narInfoOf(t, pi).Fingerprint()
	for _, k := range []signing.SecretKey{nixKey, ourKey} {
		want := k.Sign(fp)
		if !slices.Contains(pi.Signatures, want) {
			t.Errorf("key %s: Nix's signatures %q do not include ours %q (fingerprint %q)", k.Name, pi.Signatures, want, fp)
		}
	}
	for _, pub := range []signing.PublicKey{nixPub, ourKey.Public()} {
		n := 0
		for _, sig := range pi.Signatures {
			if pub.Verify(fp, sig) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("key %s verifies %d of Nix's signatures %q, want 1", pub.Name, n, pi.Signatures)
		}
	}
}

func TestNixWrittenNarinfo(t *testing.T) {
	requireNix(t)
	env := nixEnv(t)
	path := buildTestPath(t, env)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "nix.sk"), filepath.Join(dir, "nix.pk")
	nixRun(t, env, "nix-store", "--generate-binary-cache-key", "nix-made-1", sk, pk)
	pkText, _ := os.ReadFile(pk)
	nixPub, err := signing.ParsePublicKey(string(pkText))
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	nixRun(t, env, "nix", "copy", "--to", "file://"+cache+"?compression=xz&secret-key="+sk, path)

	// Both narinfos (the leaf has no references, the top two): our output must be Nix's
	// byte for byte, and Nix's signatures must verify against our fingerprint.
	files, _ := filepath.Glob(filepath.Join(cache, "*.narinfo"))
	if len(files) != 2 {
		t.Fatalf("nix copy wrote %d narinfos, want 2", len(files))
	}
	var top *narinfo.NarInfo
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ni, err := narinfo.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got := ni.Bytes(); !bytes.Equal(got, data) {
			t.Errorf("%s: Bytes() differs from what Nix wrote\n got: %q\nwant: %q", f, got, data)
		}
		if len(ni.References) == 0 && !bytes.Contains(data, []byte("\nReferences: \n")) {
			t.Errorf("%s: Nix no longer writes an empty References line as \"References: \"", f)
		}
		if !verifies(ni, nixPub) {
			t.Errorf("%s: Nix's signature does not verify against our fingerprint %q", f, ni.Fingerprint())
		}
		if ni.StorePath == path {
			top = ni
		}
	}
	if top == nil {
		t.Fatalf("no narinfo for %s", path)
	}

	// Now the other way: re-sign the narinfo with our key only, write it with Bytes, and
	// let Nix check it with our public key string in trusted-public-keys.
	ourKey, err := signing.Generate("ours-1")
	if err != nil {
		t.Fatal(err)
	}
	top.Sigs = []string{ourKey.Sign(top.Fingerprint())}
	f := filepath.Join(cache, top.HashPart()+".narinfo")
	if err := os.WriteFile(f, top.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(trusted string) error {
		_, err := nixTry(env, "nix", "store", "verify", "--store", "file://"+cache,
			"--sigs-needed", "1", "--option", "trusted-public-keys", trusted, path)
		return err
	}
	if err := verify(ourKey.Public().String()); err != nil {
		t.Errorf("nix store verify rejects our signature with our public key: %v", err)
	}
	if err := verify(nixPub.String()); err == nil {
		t.Error("nix store verify accepts the path without a signature by a trusted key; the check above proves nothing")
	}
	if err := verify(ourKey.Public().String() + " " + nixPub.String()); err != nil {
		t.Errorf("nix store verify with both keys: %v", err)
	}
}
