package nix

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// cachedBinary builds ./cmd/cached once for the tests of this package.
func cachedBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "cached-nix-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "cached")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/cached")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/cached: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// maxExposure is the highest `systemd-analyze security` exposure accepted for the units, on its
// 0-100 scale (it prints 1.2 for 12). The units score 12 with systemd 252: what is left open is
// the network (it is a server), the host's root directory, /proc/stat (the Prometheus process
// collector reads it) and @resources (Go's runtime raises RLIMIT_NOFILE at start).
const maxExposure = "20"

// analyze runs systemd-analyze verify and security on unit files: verify must print nothing
// (it reports unknown directives and bad values without failing), and the exposure must stay
// within maxExposure.
func analyze(t *testing.T, dir string, units ...string) {
	t.Helper()
	bin := requireTool(t, "systemd-analyze", "apt-get install -y systemd")
	var paths []string
	for _, u := range units {
		paths = append(paths, filepath.Join(dir, u))
	}
	cmd := exec.Command(bin, append([]string{"verify", "--man=no"}, paths...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", strings.Join(units, " "), err, out)
	}
	for _, u := range units {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		cmd := exec.Command(bin, "security", "--offline=yes", "--threshold="+maxExposure, filepath.Join(dir, u))
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze security %s: exposure above %s (%v):\n%s", u, maxExposure, err, out)
		}
	}
}

// TestContribUnits checks the plain systemd units in contrib/ with systemd's own parser and
// security analysis, with the ExecStart binary pointed at a real build.
func TestContribUnits(t *testing.T) {
	requireTool(t, "systemd-analyze", "apt-get install -y systemd")
	root := repoRoot(t)
	bin := cachedBinary(t)
	dir := t.TempDir()
	units := []string{"cached.service", "cached-gc.service", "cached-gc.timer"}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join(root, "contrib", u))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if strings.HasSuffix(u, ".service") && !strings.Contains(text, "ExecStart=/usr/local/bin/cached ") {
			t.Errorf("contrib/%s does not run /usr/local/bin/cached", u)
		}
		for _, want := range map[string][]string{
			"cached.service": {
				"ExecStart=/usr/local/bin/cached serve --config /etc/cached/config.toml\n",
				"DynamicUser=yes\n", "StateDirectory=cached\n", "LimitNOFILE=65536\n", "Restart=on-failure\n",
				"LoadCredential=secret-key-0:/etc/cached/secret-key\n",
				"LoadCredential=upload-tokens:/etc/cached/upload-tokens\n",
			},
			"cached-gc.service": {
				"LoadCredential=admin-token:/var/lib/cached/admin-token\n",
				"--admin-token-file ${CREDENTIALS_DIRECTORY}/admin-token",
			},
			"cached-gc.timer": {"OnCalendar=daily\n", "WantedBy=timers.target\n"},
		}[u] {
			if !strings.Contains(text, want) {
				t.Errorf("contrib/%s lacks %q", u, want)
			}
		}
		text = strings.ReplaceAll(text, "/usr/local/bin/cached", bin)
		if err := os.WriteFile(filepath.Join(dir, u), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	analyze(t, dir, units...)

	// The example config names the credentials cached.service loads.
	conf, err := os.ReadFile(filepath.Join(root, "contrib", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`secret-key-file = ["/run/credentials/cached.service/secret-key-0"]`,
		`upload-token-file = "/run/credentials/cached.service/upload-tokens"`,
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("contrib/config.toml lacks %s", want)
		}
	}
}

// renderUnit writes a unit file the way NixOS renders systemd.services: one line per list
// element, booleans as true/false.
func renderUnit(u unit, section string, settings map[string]any) string {
	var b strings.Builder
	line := func(k string, v any) {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				fmt.Fprintf(&b, "%s=%v\n", k, e)
			}
		default:
			fmt.Fprintf(&b, "%s=%v\n", k, v)
		}
	}
	b.WriteString("[Unit]\n")
	for _, a := range u.After {
		line("After", a)
	}
	fmt.Fprintf(&b, "[%s]\n", section)
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		line(k, settings[k])
	}
	if len(u.WantedBy) > 0 {
		b.WriteString("[Install]\n")
		for _, w := range u.WantedBy {
			line("WantedBy", w)
		}
	}
	return b.String()
}

// TestModuleUnits checks the units the NixOS module generates with systemd-analyze, as
// TestContribUnits does for contrib/: every directive known to systemd, every value valid,
// the exposure as low.
func TestModuleUnits(t *testing.T) {
	requireTool(t, "systemd-analyze", "apt-get install -y systemd")
	for _, tc := range []struct{ name, config string }{
		{"all secrets and gc", `{
      enable = true;
      settings.listen = "0.0.0.0:5000";
      secretKeyFile = [ "/etc/cached/a" "/etc/cached/b" ];
      uploadTokenFile = "/etc/cached/upload-tokens";
      adminTokenFile = "/etc/cached/admin-token";
      environmentFile = "/etc/cached/env";
      gc = { enable = true; olderThan = "30d"; maxSize = "500 GiB"; };
    }`},
		{"privileged port", `{ enable = true; settings.listen = "[::]:443"; }`},
		{"push", pushConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustEvalModule(t, tc.config)
			bin := cachedBinary(t)
			dir := t.TempDir()
			var units []string
			write := func(name, text string) {
				text = strings.ReplaceAll(text, "/nix/store/00000000000000000000000000000000-cached/bin/cached", bin)
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				units = append(units, name)
			}
			for name, u := range s.Services {
				write(name+".service", renderUnit(u, "Service", u.ServiceConfig))
			}
			for name, u := range s.Timers {
				write(name+".timer", renderUnit(u, "Timer", u.TimerConfig))
			}
			slices.Sort(units)
			analyze(t, dir, units...)
		})
	}
}
