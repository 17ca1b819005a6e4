package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The pull-through flags: a list of upstreams from the file, and every bad combination or value
// refused with the flag and the value named.
func TestPullFlags(t *testing.T) {
	cleanEnv(t)
	const key = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	path := writeConfig(t, `
upstream = ["http://127.0.0.1:1/a", "https://cache.example.org"]
upstream-key = ["`+key+`"]
upstream-negative-ttl = "5s"
`)
	c, _, err := parseArgs(t, "serve", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Serve.Upstream; len(got) != 2 || got[1] != "https://cache.example.org" {
		t.Fatalf("upstreams from the file: %q", got)
	}
	p, err := c.Serve.puller(nil, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Upstreams(), " "); got != "http://127.0.0.1:1/a/ https://cache.example.org/" {
		t.Fatalf("upstreams: %s", got)
	}
	p.Close()

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--upstream", "http://u"}, "--upstream needs --upstream-key"},
		{[]string{"--upstream-key", key}, "--upstream-key without --upstream"},
		{[]string{"--upstream", "http://u", "--upstream-key", "nocolon"}, `--upstream-key: `},
		{[]string{"--upstream", "ftp://u", "--upstream-key", key}, `upstream "ftp://u": want an http:// or https:// URL`},
		{[]string{"--upstream", "http://u", "--upstream", "http://u/", "--upstream-key", key}, "given twice"},
		{[]string{"--upstream", "http://u", "--upstream-key", key, "--upstream-idle-timeout", "0s"}, "--upstream-idle-timeout 0s: want more than 0"},
		{[]string{"--upstream", "http://u", "--upstream-key", key, "--upstream-breaker-failures", "0"}, "--upstream-breaker-failures 0"},
	} {
		c, _, err := parseArgs(t, append([]string{"serve"}, tc.args...)...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		p, err := c.Serve.puller(nil, t.TempDir(), nil)
		if err == nil {
			p.Close()
			t.Fatalf("%v: accepted", tc.args)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%v: %q, want it to say %q", tc.args, err, tc.want)
		}
	}
}

// --upstream-netrc-file and --upstream-token-file: read per host, a bare token only for a
// single upstream, and errors that name the file but never show what it holds.
func TestPullCredentialFiles(t *testing.T) {
	cleanEnv(t)
	const key = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	one := []string{"--upstream", "https://cache.corp.example", "--upstream-key", key}
	two := append([]string{"--upstream", "https://cache.nixos.org"}, one...)
	for _, tc := range []struct {
		name string
		args []string
		want string // "" accepted
	}{
		{"netrc for the host", append(one, "--upstream-netrc-file", write("n1", "machine cache.corp.example login ci password S3CRET\n")), ""},
		{"netrc default", append(two, "--upstream-netrc-file", write("n2", "default login ci password S3CRET\n")), ""},
		{"netrc for no upstream", append(two, "--upstream-netrc-file", write("n3", "machine github.com password S3CRET\n")), "has no machine line for any upstream host (cache.nixos.org, cache.corp.example)"},
		{"bad netrc", append(one, "--upstream-netrc-file", write("n4", "machine cache.corp.example pasword S3CRET\n")), "n4: netrc: unknown keyword"},
		{"missing netrc", append(one, "--upstream-netrc-file", filepath.Join(dir, "nope")), "no such file"},
		{"bare token, one upstream", append(one, "--upstream-token-file", write("t1", "S3CRET\n")), ""},
		{"bare token, two upstreams", append(two, "--upstream-token-file", write("t2", "S3CRET\n")), "holds a bare token but there are 2 upstreams"},
		{"token netrc, two upstreams", append(two, "--upstream-token-file", write("t3", "machine cache.corp.example password S3CRET\n")), ""},
		{"empty token", append(one, "--upstream-token-file", write("t4", "\n")), "t4 is empty"},
		{"two words", append(one, "--upstream-token-file", write("t5", "S3CRET other\n")), "more than one word"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := parseArgs(t, append([]string{"serve"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			p, err := c.Serve.puller(nil, t.TempDir(), nil)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				p.Close()
				return
			}
			if err == nil {
				p.Close()
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "S3CRET") {
				t.Fatalf("%q: want it to say %q and not show the secret", err, tc.want)
			}
		})
	}
}

// An upstream URL's password never shows in the errors about it.
func TestPullURLErrorsHidePassword(t *testing.T) {
	cleanEnv(t)
	const key = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	for _, raw := range []string{"ftp://ci:S3CRET@cache.example", "https://ci:S3CRET@cache.example/?q", "http://ci:S3CRET@[::1:bad"} {
		c, _, err := parseArgs(t, "serve", "--upstream", raw, "--upstream-key", key)
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.Serve.puller(nil, t.TempDir(), nil)
		if err == nil {
			p.Close()
			t.Fatalf("%s accepted", raw)
		}
		if strings.Contains(err.Error(), "S3CRET") || !strings.Contains(err.Error(), "upstream") {
			t.Fatalf("%s: error %q", raw, err)
		}
	}
}
