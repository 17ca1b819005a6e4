package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/signing"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	digest := auth.HashToken("secret")
	p := writeFile(t, dir, "tokens", "# upload tokens\nplain-token\n\n  "+digest+"  \n")
	got, err := readTokenFile("--upload-token-file", p)
	if err != nil || len(got) != 2 || got[0] != "plain-token" || got[1] != digest {
		t.Fatalf("readTokenFile = %q, %v", got, err)
	}
	for name, tc := range map[string]struct{ content, want string }{
		"short digest":  {"ok\nsha256:abc\n", "line 2"},
		"not hex":       {"sha256:" + strings.Repeat("x", 64), "line 1"},
		"only comments": {"# nothing\n\n", "holds no token"},
	} {
		p := writeFile(t, dir, name, tc.content)
		_, err := readTokenFile("--admin-token-file", p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--admin-token-file") {
			t.Errorf("%s: %v; want an error naming the flag, %s and %q", name, err, p, tc.want)
		}
	}
	if _, err := readTokenFile("--admin-token-file", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// TestAdminTokenFile: the default admin token is generated once; a given file is read (digests
// allowed) and never created.
func TestAdminTokenFile(t *testing.T) {
	data := t.TempDir()
	toks, created, path, err := loadAdminToken("", data)
	if err != nil || !created || len(toks) != 1 || !strings.HasPrefix(toks[0], "cached_admin_") || path != filepath.Join(data, "admin-token") {
		t.Fatalf("first start: %q, %v, %s, %v", toks, created, path, err)
	}
	again, created, _, err := loadAdminToken("", data)
	if err != nil || created || again[0] != toks[0] {
		t.Fatalf("second start: %q, %v, %v; want the same token", again, created, err)
	}
	given := writeFile(t, t.TempDir(), "cred", auth.HashToken("x")+"\n")
	got, created, path, err := loadAdminToken(given, data)
	if err != nil || created || path != given || len(got) != 1 || got[0] != auth.HashToken("x") {
		t.Fatalf("--admin-token-file: %q, %v, %s, %v", got, created, path, err)
	}
	missing := filepath.Join(t.TempDir(), "none")
	if _, _, _, err := loadAdminToken(missing, data); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing --admin-token-file: %v", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("a missing --admin-token-file was created")
	}
}

func TestSecretValue(t *testing.T) {
	dir := t.TempDir()
	if v, err := secretValue("--s3-secret-key", "inline", ""); v != "inline" || err != nil {
		t.Errorf("inline: %q, %v", v, err)
	}
	p := writeFile(t, dir, "key", "s3cr3t \n")
	if v, err := secretValue("--s3-secret-key", "", p); v != "s3cr3t " || err != nil {
		t.Errorf("file: %q, %v; want the trailing newline trimmed and nothing else", v, err)
	}
	if _, err := secretValue("--s3-secret-key", "inline", p); err == nil || !strings.Contains(err.Error(), "--s3-secret-key-file") {
		t.Errorf("both: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := secretValue("--s3-access-key", "", missing); err == nil || !strings.Contains(err.Error(), "--s3-access-key-file") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v; want the flag and the path", err)
	}
	empty := writeFile(t, dir, "empty", "\n")
	if _, err := secretValue("--s3-access-key", "", empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty file: %v", err)
	}
	if err := os.Chmod(p, 0); err == nil && os.Geteuid() != 0 {
		if _, err := secretValue("--s3-secret-key", "", p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("unreadable file: %v", err)
		}
	}
}

// TestLoadKeys: every --secret-key-file is loaded, the first is the primary; a missing,
// malformed or duplicate-named key is an error naming the flag and the file.
func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for _, name := range []string{"b-2", "a-1"} {
		k, _ := signing.Generate(name)
		sk := filepath.Join(dir, name+".secret")
		if err := signing.WriteKeyPair(sk, filepath.Join(dir, name+".public"), k); err != nil {
			t.Fatal(err)
		}
		files = append(files, sk)
	}
	d := dataFlags{Data: t.TempDir(), SecretKeyFile: files}
	keys, created, err := d.loadKeys()
	if err != nil || created || len(keys) != 2 || keys[0].Name != "b-2" || keys[1].Name != "a-1" {
		t.Fatalf("loadKeys = %v, %v, %v", keys, created, err)
	}
	if _, err := os.Stat(filepath.Join(d.Data, "secret-key")); err == nil {
		t.Error("a default key was generated although keys were given")
	}
	sameName, _ := signing.Generate("a-1")
	dup := filepath.Join(dir, "other-a-1.secret")
	signing.WriteKeyPair(dup, dup+".pub", sameName)
	bad := writeFile(t, dir, "bad.secret", "a-1:bm90IGEga2V5")
	for name, tc := range map[string]struct {
		files []string
		want  []string
	}{
		"missing":   {[]string{files[0], filepath.Join(dir, "missing.secret")}, []string{"missing.secret"}},
		"malformed": {[]string{bad}, []string{bad}},
		"same name": {[]string{files[1], dup}, []string{files[1], dup, `"a-1"`}},
		"empty":     {[]string{files[0], ""}, []string{"empty file name"}},
	} {
		d := dataFlags{Data: t.TempDir(), SecretKeyFile: tc.files}
		_, _, err := d.loadKeys()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, w := range append(tc.want, "--secret-key-file") {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to name %s", name, err, w)
			}
		}
		if strings.Contains(err.Error(), "bm90IGEga2V5") {
			t.Errorf("%s: error quotes key material: %v", name, err)
		}
	}
	// Without the flag, the generated default stays.
	d = dataFlags{Data: t.TempDir(), KeyName: "gen-1"}
	keys, created, err = d.loadKeys()
	if err != nil || !created || len(keys) != 1 || keys[0].Name != "gen-1" {
		t.Fatalf("default key: %v, %v, %v", keys, created, err)
	}
	if keys, created, err = d.loadKeys(); err != nil || created || keys[0].Name != "gen-1" {
		t.Fatalf("default key again: %v, %v, %v", keys, created, err)
	}
	if err := os.WriteFile(filepath.Join(d.Data, "secret-key"), []byte("gen-1:xx"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.loadKeys(); err == nil || !strings.Contains(err.Error(), filepath.Join(d.Data, "secret-key")) {
		t.Errorf("malformed default key: %v; want the file named", err)
	}
}
