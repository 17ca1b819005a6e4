package nix

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// pushConfig is a services.cached definition with only the builder's push service.
const pushConfig = `{
    push = {
      enable = true;
      url = "https://cache.example.org";
      tokenFile = "/run/keys/push-token";
      settings = { compression = "none"; ignore = [ "*.drv" "*.iso" ]; jobs = 4; skip-upstream = [ "https://cache.nixos.org" ]; };
    };
  }`

// TestModulePush checks services.cached.push: a hardened cached-push unit running
// `cached watch-store` with the token as a credential, and a TOML file that cached accepts,
// naming the URL, the credential, the queue in the unit's state directory and nix; no server.
func TestModulePush(t *testing.T) {
	s := mustEvalModule(t, pushConfig)
	if _, ok := s.Services["cached"]; ok {
		t.Error("push alone defines the cached server's unit")
	}
	u, ok := s.Services["cached-push"]
	if !ok {
		t.Fatalf("no cached-push service in %v", s.Services)
	}
	sc := u.ServiceConfig
	checkSettings(t, "cached-push.service", sc, hardening)
	checkSettings(t, "cached-push.service", sc, map[string]any{
		"User":           "cached-push",
		"StateDirectory": "cached-push",
		"CacheDirectory": "cached-push",
		"Restart":        "on-failure",
		"PrivateUsers":   true,
		"LoadCredential": []any{"token:/run/keys/push-token"},
		"Environment":    []any{"HOME=%S/cached-push", "XDG_CACHE_HOME=%C/cached-push"},
	})
	if !slices.Contains(u.WantedBy, "multi-user.target") || !slices.Contains(u.After, "nix-daemon.service") {
		t.Errorf("cached-push.service wantedBy %v after %v: want multi-user.target, and after nix-daemon.service", u.WantedBy, u.After)
	}
	if !slices.Contains(s.Packages, "/nix/store/00000000000000000000000000000000-cached") {
		t.Errorf("environment.systemPackages = %v, want the package (for cached push --enqueue in a post-build hook)", s.Packages)
	}
	execStart, _ := sc["ExecStart"].(string)
	f := strings.Fields(execStart)
	if len(f) != 4 || f[0] != "/nix/store/00000000000000000000000000000000-cached/bin/cached" || f[1] != "watch-store" || f[2] != "--config" {
		t.Fatalf("ExecStart = %q, want BIN watch-store --config FILE", execStart)
	}
	b, err := os.ReadFile(f[3])
	if err != nil {
		t.Fatal(err)
	}
	toml := string(b)
	for _, line := range []string{
		`url = "https://cache.example.org"`,
		`token-file = "/run/credentials/cached-push.service/token"`,
		`queue-dir = "/var/lib/cached-push"`,
		`nix = "/nix/store/00000000000000000000000000000000-nix/bin/nix"`,
		`compression = "none"`,
		`ignore = ["*.drv", "*.iso"]`,
		`jobs = 4`,
		`skip-upstream = ["https://cache.nixos.org"]`,
	} {
		if !slices.Contains(strings.Split(toml, "\n"), line) {
			t.Errorf("config file lacks the line %s:\n%s", line, toml)
		}
	}
	if strings.Contains(toml, "/run/keys") {
		t.Errorf("config file names the token's source path instead of its credential:\n%s", toml)
	}
	bin := cachedBinary(t)
	if out, err := exec.Command(bin, "config", "check", "--config", f[3]).CombinedOutput(); err != nil {
		t.Errorf("cached config check --config %s: %v\n%s", f[3], err, out)
	}
	// With the server on the same machine, both units.
	s = mustEvalModule(t, `{ enable = true; push = { enable = true; url = "http://127.0.0.1:5000"; tokenFile = "/var/lib/cached/upload-tokens"; }; }`)
	for _, name := range []string{"cached", "cached-push"} {
		if _, ok := s.Services[name]; !ok {
			t.Errorf("server and push: no %s service in %v", name, s.Services)
		}
	}
}

// TestModulePushRejects: bad push options stop evaluation naming the option.
func TestModulePushRejects(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         []string
	}{
		{"no url", `{ push = { enable = true; tokenFile = "/run/keys/t"; }; }`,
			[]string{"services.cached.push.url", "has no value defined"}},
		{"no token file", `{ push = { enable = true; url = "https://c.example"; }; }`,
			[]string{"services.cached.push.tokenFile", "has no value defined"}},
		{"url not http", `{ push = { enable = true; url = "s3://bucket"; tokenFile = "/run/keys/t"; }; }`,
			[]string{"services.cached.push.url", "is not of type"}},
		{"url with a query", `{ push = { enable = true; url = "https://c.example?compression=zstd"; tokenFile = "/run/keys/t"; }; }`,
			[]string{"services.cached.push.url", "is not of type"}},
		{"token as a Nix path, which would be copied to the store", `{ push = { enable = true; url = "https://c.example"; tokenFile = /etc/token; }; }`,
			[]string{"services.cached.push.tokenFile", "is not of type"}},
		{"token file in settings", `{ push = { enable = true; url = "https://c.example"; tokenFile = "/run/keys/t"; settings.token-file = "/etc/t"; }; }`,
			[]string{"Failed assertions", "services.cached.push.settings.token-file is set by the module"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := evalModule(t, tc.config)
			if err == nil {
				t.Fatalf("services.cached = %s evaluated; want an error", tc.config)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("services.cached = %s: error lacks %q:\n%v", tc.config, w, err)
				}
			}
		})
	}
}
