package main

import (
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
